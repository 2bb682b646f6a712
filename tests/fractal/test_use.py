"""FRACTAL scores in use: sentences located in their response (for weighted SFT), and the scorer as a process
reward (best-of-n, DPO pairs). The weighted SFT itself is tested in tests/fractal/test_fractal_sft.py and
tests/lm/test_sft_data.py, its loss in tests/lm/test_weighted_loss.py."""

from __future__ import annotations

import json

import pytest

from adaptlab.errors import AdaptlabError, ConfigError, DataError, RunDirError
from adaptlab.fractal.use import (
    best_of_n,
    locate_sentences,
    preference_pairs,
    response_reward,
    write_dpo_jsonl,
)

RESPONSE = "It is 42. The moon is cheese. So the answer is 42."


def test_sentences_are_located_in_order():
    offsets = locate_sentences(RESPONSE, ["It is 42.", "The moon is cheese.", "So the answer is 42."])
    assert offsets == [(0, 9), (10, 29), (30, 50)]
    assert [RESPONSE[start:end] for start, end in offsets][2] == "So the answer is 42."
    assert locate_sentences("42. 42.", ["42.", "42."]) == [(0, 3), (4, 7)]  # each after the previous one
    with pytest.raises(DataError, match="sentence 1 .*not found in the response after offset 2"):
        locate_sentences("B. A.", ["B.", "B."])


# --------------------------------------------------------------------------------------- process reward


def digit_fraction(context, sentences):
    """A fake scorer: the fraction of a sentence's non-space characters that are digits."""
    scores = []
    for sentence in sentences:
        chars = [c for c in sentence if not c.isspace()]
        scores.append(sum(c.isdigit() for c in chars) / len(chars))
    return scores


def test_response_reward_min_and_mean():
    assert response_reward([0.2, 0.8], "min") == 0.2
    assert response_reward([0.2, 0.8], "mean") == 0.5
    with pytest.raises(DataError, match="no sentence scores"):
        response_reward([], "min")
    with pytest.raises(ConfigError, match="reduce"):
        response_reward([0.5], "max")


def test_best_of_n_min_versus_mean():
    steady = "1234 5678 x. 1234 5678 x."  # two sentences, 8/10 digits each
    spiky = "123456789012. Hmm ok."  # all digits then no digits
    best_min, rewards_min = best_of_n("ctx", [spiky, steady], digit_fraction, "min")
    assert best_min == 1 and rewards_min[0] == 0.0 and rewards_min[1] == pytest.approx(0.8)
    best_mean, rewards_mean = best_of_n("ctx", [spiky, "abc. 1 b."], digit_fraction, "mean")
    assert best_mean == 0 and rewards_mean[0] == pytest.approx((12 / 13 + 0) / 2)
    assert best_of_n(None, ["no digits.", "7.", "   "], digit_fraction, "min") == (1, [0.0, 0.5, 0.0])
    with pytest.raises(DataError, match="at least one candidate"):
        best_of_n(None, [], digit_fraction)


def test_score_fn_contract_is_checked():
    with pytest.raises(ValueError, match="one score in"):
        best_of_n(None, ["Yes. No."], lambda context, sentences: [0.5])


def test_preference_pairs_and_counts(tmp_path):
    items = [
        {"prompt": "p1", "responses": ["no digits.", "42.", "4 x."]},
        {"prompt": "p2", "responses": ["only one."]},
        {"prompt": "p3", "responses": ["same.", "also same."]},  # margin 0
        {"prompt": "p4", "responses": ["1 abcdefghi.", "1 abcde."]},  # margin 1/7 - 1/11 < 0.1
    ]
    pairs, counts = preference_pairs(items, digit_fraction, "mean", min_margin=0.1)
    assert counts == {"prompts": 4, "pairs": 1, "skipped_too_few_responses": 1, "skipped_small_margin": 2}
    assert pairs == [
        {
            "prompt": "p1",
            "chosen": "42.",
            "rejected": "no digits.",
            "chosen_reward": pytest.approx(2 / 3),
            "rejected_reward": 0.0,
        }
    ]
    pairs, counts = preference_pairs(items, digit_fraction, "mean")
    assert counts["pairs"] == 2 and pairs[1]["chosen"] == "1 abcde."
    with pytest.raises(DataError, match="item 0"):
        preference_pairs([{"prompt": "p", "responses": "one string"}], digit_fraction)

    path = write_dpo_jsonl(pairs, tmp_path / "dpo" / "train.jsonl")
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [set(line) for line in lines] == [{"prompt", "chosen", "rejected", "chosen_reward", "rejected_reward"}] * 2
    assert lines[0]["chosen"] == "42." and lines[1]["prompt"] == "p4"
    with pytest.raises(RunDirError, match="already exists"):
        write_dpo_jsonl(pairs, path)
    with pytest.raises(AdaptlabError, match="pair 0"):
        write_dpo_jsonl([{"prompt": "p", "chosen": 1, "rejected": "r"}], tmp_path / "bad.jsonl")
    assert not (tmp_path / "bad.jsonl").exists()
