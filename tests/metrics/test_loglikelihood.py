"""lm-evaluation-harness's log-likelihood conventions: tokenization, pairs, rolling windows, batched scoring."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from adaptlab.errors import DataError
from adaptlab.metrics.loglikelihood import (
    Request,
    context_length,
    encode,
    encode_pair,
    loglikelihoods,
    model_input,
    rolling_windows,
)


@pytest.fixture(scope="module")
def tokenizers(scoring_models):
    return {shape: AutoTokenizer.from_pretrained(path) for shape, path in scoring_models.items()}


@pytest.fixture(scope="module")
def llama(scoring_models):
    return AutoModelForCausalLM.from_pretrained(scoring_models["llama-bos"])


def test_encode_uses_the_tokenizers_own_special_tokens(tokenizers):
    bos, plain = tokenizers["llama-bos"], tokenizers["qwen2-no-bos"]
    words = plain("Bond prices fell", add_special_tokens=False)["input_ids"]
    assert encode(plain, "Bond prices fell") == words  # Qwen2-like: nothing added
    assert encode(bos, "Bond prices fell") == [bos.bos_token_id] + bos("Bond prices fell",
                                                                       add_special_tokens=False)["input_ids"]
    assert encode(bos, "<|bos|>Bond")[0] == bos.bos_token_id and encode(bos, "<|bos|>Bond").count(bos.bos_token_id) == 1


def test_pairs_move_trailing_space_and_slice_the_whole(tokenizers):
    tokenizer = tokenizers["llama-bos"]
    request, clean = encode_pair(tokenizer, "Prices went ", "up")
    assert clean and request.context == encode(tokenizer, "Prices went")
    assert request.continuation == encode(tokenizer, "Prices went up")[len(request.context):]
    assert tokenizer.decode(request.continuation) == " up"


def test_an_empty_context_is_the_prefix_token(tokenizers):
    llama, qwen = tokenizers["llama-bos"], tokenizers["qwen2-no-bos"]
    request, _ = encode_pair(llama, "", " Bond")
    assert request.context == [llama.bos_token_id] and request.continuation == encode(llama, " Bond",
                                                                                      add_special_tokens=False)
    request, _ = encode_pair(qwen, "", " Bond")
    assert request.context == [qwen.eos_token_id]  # no BOS: EOS, as lm-eval's prefix_token_id


def test_a_merge_across_the_boundary_is_reported(tokenizers):
    tokenizer = tokenizers["qwen2-no-bos"]
    context_ids = encode(tokenizer, "Investors move")
    whole = encode(tokenizer, "Investors moved")
    if whole[:len(context_ids)] == context_ids:
        pytest.skip("this vocabulary does not merge across the boundary")
    request, clean = encode_pair(tokenizer, "Investors move", "d")
    assert not clean and request.continuation == whole[len(context_ids):]  # lm-eval slices all the same


def lm_eval_windows(tokens, prefix, max_length):
    from lm_eval import utils

    return [Request(list(c), list(x)) for c, x in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
        token_list=tokens, prefix_token=prefix, max_seq_len=max_length, context_len=1))]


@pytest.mark.parametrize(("length", "max_length"), [(1, 4), (4, 4), (5, 4), (37, 8), (64, 16), (3, 16)])
def test_rolling_windows_are_lm_evals(length, max_length):
    tokens = list(range(100, 100 + length))
    ours = rolling_windows(tokens, 7, max_length)
    assert ours == lm_eval_windows(tokens, 7, max_length)
    assert [t for w in ours for t in w.continuation] == tokens
    assert all(len(model_input(w, max_length)) <= max_length for w in ours)


@pytest.mark.parametrize(("length", "max_length", "stride"), [(37, 8, 3), (20, 8, 8), (9, 8, 1)])
def test_a_smaller_stride_gives_each_token_more_context(length, max_length, stride):
    tokens = list(range(100, 100 + length))
    windows = rolling_windows(tokens, 7, max_length, stride)
    assert [t for w in windows for t in w.continuation] == tokens
    for window in windows[1:]:
        assert len(window.continuation) <= stride
        seen = model_input(window, max_length)
        assert len(seen) == max_length and len(seen) - len(window.continuation) + 1 >= max_length - stride + 1


def test_without_bos_or_eos_the_first_token_is_context_only():
    windows = rolling_windows([5, 6, 7, 8, 9], None, 3)
    assert windows[0] == Request([5], [6, 7, 8]) and [t for w in windows for t in w.continuation] == [6, 7, 8, 9]
    assert rolling_windows([5], None, 3) == [] and rolling_windows([], 1, 3) == []


def test_scores_equal_an_unbatched_forward_and_do_not_depend_on_batching(llama, tokenizers):
    tokenizer = tokenizers["llama-bos"]
    requests = [encode_pair(tokenizer, context, choice)[0] for context, choice in [
        ("Which asset is safest? Answer:", " a deposit"), ("Rates rise; bond prices", " fall"),
        ("A much longer context about markets, rates and the central bank. Answer:", " stocks and bonds")]]
    expected = []
    for request in requests:
        ids = torch.tensor([request.context + request.continuation])
        with torch.no_grad():
            log_probs = torch.log_softmax(llama(ids).logits[0].double(), -1)
        start = len(request.context)
        expected.append(sum(float(log_probs[p - 1, ids[0, p]]) for p in range(start, ids.shape[1])))
    for batch_size in (1, 2, 5):
        assert loglikelihoods(llama, requests, 64, batch_size) == pytest.approx(expected, abs=1e-4)


def test_too_long_inputs_lose_their_start_like_lm_eval(llama):
    request = Request(list(range(10, 30)), [40, 41])
    assert model_input(request, 8) == (request.context + request.continuation)[-9:-1]
    short = Request(request.context[-7:], request.continuation)  # what the model still sees
    assert loglikelihoods(llama, [request], 8, 1) == pytest.approx(loglikelihoods(llama, [short], 64, 1), abs=1e-6)
    with pytest.raises(DataError, match="does not fit max_length 1"):
        loglikelihoods(llama, [request], 1, 1)
    with pytest.raises(DataError, match="no token to score"):
        loglikelihoods(llama, [Request([1], [])], 8, 1)


def test_context_length_follows_lm_evals_order(llama, tokenizers):
    assert context_length(llama.config, tokenizers["llama-bos"]) == 256  # max_position_embeddings
    config = type("Config", (), {})()
    tokenizer = type("Tok", (), {"model_max_length": 77})()
    assert context_length(config, tokenizer) == 77
    tokenizer.model_max_length = 1000000000000000019884624838656  # transformers' "no limit"
    assert context_length(config, tokenizer) == 2048


def test_requests_that_read_the_same_input_share_one_forward_pass(llama):
    prompt = [1, 50, 60, 70, 80]
    requests = [Request(prompt, [90]), Request(prompt, [91]), Request(prompt[:-1], [80, 92])]
    calls = []
    handle = llama.register_forward_hook(lambda module, args, output: calls.append(1))
    try:
        shared = loglikelihoods(llama, requests, 64, batch_size=1)
    finally:
        handle.remove()
    assert len(calls) == 1  # all three read the prompt; the third scores two tokens of it
    alone = [loglikelihoods(llama, [r], 64, 1)[0] for r in requests]
    assert shared == pytest.approx(alone, abs=1e-6)
