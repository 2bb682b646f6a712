"""Perplexity: hand-computed against the model's own loss, lm-eval's word/byte metrics, batching, bad input."""

from __future__ import annotations

import math
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptlab.errors import ConfigError, DataError
from adaptlab.metrics.lm import perplexity, read_text_file

TEXT = "Bond prices fell as yields rose sharply after the central bank raised its policy rate."
LONG_TEXT = " ".join([TEXT, "Investors moved money into deposits.", "Dividends rose."] * 3)


@pytest.fixture(scope="module", params=["llama-bos", "qwen2-no-bos"])
def lm(request, scoring_models):
    """(model, tokenizer) of each tokenizer shape; the model is left in train mode, which perplexity must restore."""
    path = scoring_models[request.param]
    return AutoModelForCausalLM.from_pretrained(path).train(), AutoTokenizer.from_pretrained(path)


def test_equals_exp_of_the_model_loss_on_prefix_plus_tokens(lm):
    model, tokenizer = lm
    tokens = tokenizer(TEXT)["input_ids"]  # the tokenizer's own special tokens: BOS for llama-bos, none for qwen2
    prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = torch.tensor([[prefix] + tokens])
    result = perplexity(model, tokenizer, TEXT)
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    model.train()
    assert result["tokens"] == len(tokens) and result["windows"] == 1 and result["documents"] == 1
    assert result["max_length"] == 256  # the model's context window by default, as lm-eval
    assert result["nll_per_token"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert model.training  # the caller's mode is restored


def test_word_and_byte_metrics_use_lm_evals_counts(lm):
    model, tokenizer = lm
    texts = [TEXT, "Dividends rose.\nCash fell."]
    result = perplexity(model, tokenizer, texts)
    total = sum(result["document_loglikelihoods"])
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    size = sum(len(t.encode("utf-8")) for t in texts)
    assert (result["words"], result["bytes"]) == (words, size)
    assert result["word_perplexity"] == pytest.approx(math.exp(-total / words))
    assert result["byte_perplexity"] == pytest.approx(math.exp(-total / size))
    assert result["bits_per_byte"] == pytest.approx(-total / size / math.log(2))
    assert result["nll_per_token"] == pytest.approx(-total / result["tokens"])


def test_sum_over_documents_is_token_weighted_not_a_mean_of_means(lm):
    model, tokenizer = lm
    short = "Dividends rose."
    a, b = perplexity(model, tokenizer, short), perplexity(model, tokenizer, LONG_TEXT)
    both = perplexity(model, tokenizer, [short, LONG_TEXT])
    assert both["tokens"] == a["tokens"] + b["tokens"] and both["documents"] == 2
    expected = (a["nll_per_token"] * a["tokens"] + b["nll_per_token"] * b["tokens"]) / both["tokens"]
    assert both["nll_per_token"] == pytest.approx(expected, rel=1e-5)
    assert both["nll_per_token"] != pytest.approx((a["nll_per_token"] + b["nll_per_token"]) / 2, rel=1e-3)


def test_windows_score_every_token_once_and_context_matters(lm):
    model, tokenizer = lm
    n = len(tokenizer(LONG_TEXT)["input_ids"])
    full = perplexity(model, tokenizer, LONG_TEXT)
    disjoint = perplexity(model, tokenizer, LONG_TEXT, max_length=16)
    overlapping = perplexity(model, tokenizer, LONG_TEXT, max_length=16, stride=4)
    assert full["tokens"] == disjoint["tokens"] == overlapping["tokens"] == n
    assert full["windows"] == 1
    assert disjoint["windows"] == math.ceil(n / 16) and overlapping["windows"] == 1 + math.ceil((n - 16) / 4)
    assert abs(disjoint["nll_per_token"] - full["nll_per_token"]) > 1e-3  # windows cut the context
    assert abs(overlapping["nll_per_token"] - disjoint["nll_per_token"]) > 1e-3
    for stride in (1, 5):  # one window: the stride does not matter
        assert perplexity(model, tokenizer, LONG_TEXT, stride=stride)["nll_per_token"] == full["nll_per_token"]


def test_batching_and_padding_do_not_change_the_result(lm):
    model, tokenizer = lm
    texts = ["Dividends rose.", LONG_TEXT, TEXT, "Cash fell."]
    one = perplexity(model, tokenizer, texts, max_length=24, batch_size=1)
    many = perplexity(model, tokenizer, texts, max_length=24, batch_size=8)
    assert one["tokens"] == many["tokens"] and one["windows"] == many["windows"]
    assert many["nll_per_token"] == pytest.approx(one["nll_per_token"], rel=1e-5)
    assert perplexity(model, tokenizer, texts, max_length=24, batch_size=8) == many  # deterministic


def test_uniform_model_has_perplexity_equal_to_the_vocabulary_size(scoring_models):
    tokenizer = AutoTokenizer.from_pretrained(scoring_models["qwen2-no-bos"])
    uniform = AutoModelForCausalLM.from_pretrained(scoring_models["qwen2-no-bos"])
    with torch.no_grad():
        uniform.get_output_embeddings().weight.zero_()
    vocabulary = uniform.config.vocab_size
    assert perplexity(uniform, tokenizer, TEXT)["perplexity"] == pytest.approx(vocabulary, rel=1e-5)


def test_bad_arguments(lm):
    model, tokenizer = lm
    with pytest.raises(DataError, match="no texts"):
        perplexity(model, tokenizer, [])
    with pytest.raises(ConfigError, match="max_length"):
        perplexity(model, tokenizer, TEXT, max_length=0)
    with pytest.raises(ConfigError, match="stride"):
        perplexity(model, tokenizer, TEXT, max_length=8, stride=9)
    with pytest.raises(ConfigError, match="batch_size"):
        perplexity(model, tokenizer, TEXT, batch_size=0)


def test_empty_documents_follow_the_tokenizer(scoring_models):
    """No tokens: skipped and counted. A BOS-adding tokenizer makes "" one BOS token, which lm-eval scores too."""
    qwen = AutoModelForCausalLM.from_pretrained(scoring_models["qwen2-no-bos"])
    qwen_tokenizer = AutoTokenizer.from_pretrained(scoring_models["qwen2-no-bos"])
    with pytest.raises(DataError, match="has a token to predict"):
        perplexity(qwen, qwen_tokenizer, ["", ""])
    result = perplexity(qwen, qwen_tokenizer, [TEXT, ""])
    assert result["skipped_documents"] == 1 and result["documents"] == 1
    llama_tokenizer = AutoTokenizer.from_pretrained(scoring_models["llama-bos"])
    llama = AutoModelForCausalLM.from_pretrained(scoring_models["llama-bos"])
    assert perplexity(llama, llama_tokenizer, [""])["tokens"] == 1


def test_read_text_file_paragraphs_and_errors(tmp_path):
    path = tmp_path / "held_out.txt"
    path.write_text("\nFirst paragraph,\nsecond line.\n\n\n  \nSecond document.\n", encoding="utf-8")
    assert read_text_file(path) == ["First paragraph,\nsecond line.", "Second document."]
    with pytest.raises(DataError, match="not found") as missing:
        read_text_file(tmp_path / "nope.txt")
    assert "nope.txt" in str(missing.value)
    (tmp_path / "blank.txt").write_text("\n   \n\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_text_file(tmp_path / "blank.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8"):
        read_text_file(tmp_path / "latin1.txt")
