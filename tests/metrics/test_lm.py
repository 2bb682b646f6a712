"""Perplexity: hand-computed against the model's own loss, windowing, batching and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from adaptlab.errors import ConfigError, DataError
from adaptlab.metrics.lm import perplexity, plan_windows, read_text_file

TEXT = "The patient was given aspirin after the operation and recovered within two days."
LONG_TEXT = " ".join([TEXT, "Blood pressure stayed normal.", "No further treatment was needed."] * 4)


@pytest.fixture(scope="module")
def model(tiny_llama):
    # a sharp output layer, so that context matters to the numbers; left in train mode because
    # perplexity must switch to eval itself (and restore this)
    return tiny_llama(head_scale=20).train()


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_equals_exp_of_mean_cross_entropy_from_the_model_loss(model, tokenizer):
    ids = _ids(tokenizer, TEXT)
    result = perplexity(model, tokenizer, TEXT)
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    model.train()
    assert tokenizer.bos_token_id is None and tokenizer.eos_token_id is None  # BERT vocab: no prefix token
    assert result["tokens"] == len(ids) - 1 and result["windows"] == 1 and result["documents"] == 1
    assert result["nll_per_token"] == pytest.approx(loss, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(loss), rel=1e-5)
    assert model.training  # the caller's mode is restored


def test_bos_prefix_makes_the_first_token_scored(model, tokenizer):
    from transformers import AutoTokenizer

    with_bos = AutoTokenizer.from_pretrained(tokenizer.name_or_path, bos_token="[CLS]")
    ids = [with_bos.bos_token_id] + _ids(with_bos, TEXT)
    result = perplexity(model, with_bos, [TEXT])
    model.eval()
    with torch.no_grad():
        loss = model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss.item()
    assert result["tokens"] == len(ids) - 1 == len(_ids(tokenizer, TEXT))
    assert result["nll_per_token"] == pytest.approx(loss, rel=1e-5)


def test_sum_over_documents_is_token_weighted_not_a_mean_of_means(model, tokenizer):
    short, long = "Aspirin helps.", LONG_TEXT
    a, b = perplexity(model, tokenizer, short), perplexity(model, tokenizer, long)
    both = perplexity(model, tokenizer, [short, long, ""])
    assert both["tokens"] == a["tokens"] + b["tokens"] and both["documents"] == 2
    assert both["skipped_documents"] == 1  # the empty one is counted, not hidden
    expected = (a["nll_per_token"] * a["tokens"] + b["nll_per_token"] * b["tokens"]) / both["tokens"]
    assert both["nll_per_token"] == pytest.approx(expected, rel=1e-5)
    assert both["nll_per_token"] != pytest.approx((a["nll_per_token"] + b["nll_per_token"]) / 2, rel=1e-3)


def test_stride_does_not_matter_when_the_text_fits_one_window(model, tokenizer):
    n = len(_ids(tokenizer, TEXT))
    reference = perplexity(model, tokenizer, TEXT, max_length=n)
    for stride in (1, 3, n - 1):
        result = perplexity(model, tokenizer, TEXT, max_length=n, stride=stride)
        assert result == pytest.approx(reference, rel=1e-6)
    assert reference["windows"] == 1


def test_sliding_window_scores_every_token_once_whatever_the_stride(model, tokenizer):
    n = len(_ids(tokenizer, LONG_TEXT))
    full = perplexity(model, tokenizer, LONG_TEXT, max_length=n)
    disjoint = perplexity(model, tokenizer, LONG_TEXT, max_length=16)
    overlapping = perplexity(model, tokenizer, LONG_TEXT, max_length=16, stride=4)
    assert full["tokens"] == disjoint["tokens"] == overlapping["tokens"] == n - 1
    assert disjoint["windows"] == 1 + math.ceil((n - 16) / 15)
    assert overlapping["windows"] == 1 + math.ceil((n - 16) / 4)
    # less context changes the numbers; more context (smaller stride) is closer to the full-context value
    assert disjoint["nll_per_token"] != pytest.approx(full["nll_per_token"], rel=1e-4)
    gap_disjoint = abs(disjoint["nll_per_token"] - full["nll_per_token"])
    gap_overlap = abs(overlapping["nll_per_token"] - full["nll_per_token"])
    assert gap_overlap < gap_disjoint


def test_window_plan_tiles_the_targets():
    for length, max_length, stride in [(2, 2, 1), (10, 4, 3), (10, 4, 1), (37, 8, 5), (8, 8, 7)]:
        windows = plan_windows(length, max_length, stride)
        scored = [p for _, end, start in windows for p in range(start, end)]
        assert scored == list(range(1, length))
        for begin, end, start in windows:
            assert 0 <= begin < start <= end and end - begin <= max_length
            assert start - begin >= min(max_length - stride, start)  # the promised minimum context
    assert plan_windows(1, 4, 3) == [] and plan_windows(0, 4, 3) == []


def test_batching_and_padding_do_not_change_the_result(model, tokenizer):
    texts = ["Aspirin helps.", LONG_TEXT, TEXT, "Two days."]
    one = perplexity(model, tokenizer, texts, max_length=24, batch_size=1)
    many = perplexity(model, tokenizer, texts, max_length=24, batch_size=8)
    assert one["tokens"] == many["tokens"] and one["windows"] == many["windows"]
    assert many["nll_per_token"] == pytest.approx(one["nll_per_token"], rel=1e-5)
    assert perplexity(model, tokenizer, texts, max_length=24, batch_size=8) == many  # deterministic


def test_longer_texts_score_more_tokens(model, tokenizer):
    assert perplexity(model, tokenizer, LONG_TEXT)["tokens"] > perplexity(model, tokenizer, TEXT)["tokens"]
    assert perplexity(model, tokenizer, [TEXT, TEXT])["tokens"] == 2 * perplexity(model, tokenizer, TEXT)["tokens"]


def test_uniform_model_has_perplexity_equal_to_the_vocabulary_size(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2)
    uniform = LlamaForCausalLM(config)
    with torch.no_grad():
        uniform.lm_head.weight.zero_()
    assert perplexity(uniform, tokenizer, TEXT)["perplexity"] == pytest.approx(len(tokenizer), rel=1e-5)


def test_empty_input_and_bad_arguments(model, tokenizer):
    with pytest.raises(DataError, match="no texts"):
        perplexity(model, tokenizer, [])
    with pytest.raises(DataError, match="has a token to predict"):
        perplexity(model, tokenizer, ["", "   "])
    with pytest.raises(ConfigError, match="max_length"):
        perplexity(model, tokenizer, TEXT, max_length=1)
    with pytest.raises(ConfigError, match="stride"):
        perplexity(model, tokenizer, TEXT, max_length=8, stride=8)
    with pytest.raises(ConfigError, match="batch_size"):
        perplexity(model, tokenizer, TEXT, batch_size=0)


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
