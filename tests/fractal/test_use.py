"""Sentence-weighted SFT on a tiny random Llama, and the scorer as a process reward (best-of-n, DPO pairs)."""

from __future__ import annotations

import json

import pytest
import torch

from adaptlab.errors import AdaptlabError, ConfigError, DataError, RunDirError
from adaptlab.fractal.bags import split_sentences
from adaptlab.fractal.use import (
    IGNORE_INDEX,
    WeightedSFTCollator,
    WeightedSFTTrainer,
    best_of_n,
    locate_sentences,
    preference_pairs,
    response_reward,
    token_weights,
    weighted_causal_lm_loss,
    write_dpo_jsonl,
)

PROMPT = "Question: what is six times seven? Answer: "
RESPONSE = "It is 42. The moon is cheese. So the answer is 42."


def sentence_spans():
    return [(start, end) for _, start, end in split_sentences(RESPONSE)]


# ---------------------------------------------------------------------------------------------- token weights


def test_token_weights_follow_sentences(tokenizer):
    offsets = locate_sentences(RESPONSE, ["It is 42.", "The moon is cheese.", "So the answer is 42."])
    ids, labels, weights = token_weights(tokenizer, PROMPT, RESPONSE, offsets, [0.9, 0.1, 0.6])
    assert len(ids) == len(labels) == len(weights)
    encoding = tokenizer(PROMPT + RESPONSE, return_offsets_mapping=True)
    assert ids == encoding["input_ids"]
    by_text = {}
    for token_id, label, weight, (start, end) in zip(ids, labels, weights, encoding["offset_mapping"]):
        if start == end or start < len(PROMPT):  # [CLS]/[SEP] and prompt tokens are not targets
            assert (label, weight) == (IGNORE_INDEX, 0.0)
            continue
        assert label == token_id
        by_text.setdefault(weight, []).append((PROMPT + RESPONSE)[start:end])
    assert by_text[0.9] == ["It", "is", "42", "."]
    assert by_text[0.1] == ["The", "moon", "is", "cheese", "."]
    assert by_text[0.6] == ["So", "the", "answer", "is", "42", "."]


def test_mask_mode_drops_low_sentences(tokenizer):
    offsets = locate_sentences(RESPONSE, ["It is 42.", "The moon is cheese.", "So the answer is 42."])
    ids, labels, weights = token_weights(tokenizer, PROMPT, RESPONSE, offsets, [0.9, 0.1, 0.5], mode="mask")
    targets = [(tid, w) for tid, lab, w in zip(ids, labels, weights) if lab != IGNORE_INDEX]
    assert all(w == 1.0 for _, w in targets)
    assert tokenizer.decode([tid for tid, _ in targets]) == "it is 42. so the answer is 42."  # 0.5 >= threshold kept
    assert all(w == 0.0 for lab, w in zip(labels, weights) if lab == IGNORE_INDEX)


def test_gap_tokens_take_following_sentence_and_trailing_text_weight_one(tokenizer):
    response = "Good. ;; Bad. [SEP]"  # ";;" lies between sentences; the EOS string after the last sentence
    offsets = [(0, 5), (9, 13)]
    ids, labels, weights = token_weights(tokenizer, "P: ", response, offsets, [0.8, 0.2])
    targets = [(tokenizer.convert_ids_to_tokens(t), w) for t, lab, w in zip(ids, labels, weights) if lab != -100]
    assert targets == [("good", 0.8), (".", 0.8), (";", 0.2), (";", 0.2), ("bad", 0.2), (".", 0.2), ("[SEP]", 1.0)]


def test_token_weights_rejects_bad_input(tokenizer):
    with pytest.raises(DataError, match="2 sentence offsets but 1"):
        token_weights(tokenizer, "", "A. B.", [(0, 2), (3, 5)], [0.5])
    with pytest.raises(DataError, match="out of order"):
        token_weights(tokenizer, "", "A. B.", [(3, 5), (0, 2)], [0.5, 0.5])
    with pytest.raises(DataError, match=r"not a number in \[0, 1\]"):
        token_weights(tokenizer, "", "A. B.", [(0, 2), (3, 5)], [0.5, 1.5])
    with pytest.raises(ConfigError, match="mode"):
        token_weights(tokenizer, "", "A.", [(0, 2)], [0.5], mode="drop")
    with pytest.raises(DataError, match="not found in the response"):
        locate_sentences("A. B.", ["B.", "A."])


# ------------------------------------------------------------------------------------------------- the loss


def test_loss_equals_hf_loss_when_all_weights_are_one(tokenizer, tiny_llama):
    model = tiny_llama().eval()
    ids, labels, _ = token_weights(tokenizer, PROMPT, RESPONSE, sentence_spans(), [1.0, 1.0, 1.0])
    batch = WeightedSFTCollator(tokenizer.pad_token_id)(
        [
            {"input_ids": ids, "labels": labels, "weights": [1.0] * len(ids)},
            {"input_ids": ids[:-4], "labels": labels[:-4], "weights": [1.0] * (len(ids) - 4)},
        ]
    )
    assert batch["attention_mask"][1, -4:].tolist() == [0, 0, 0, 0]
    assert batch["labels"][1, -4:].tolist() == [IGNORE_INDEX] * 4 and batch["weights"][1, -4:].sum() == 0
    with torch.no_grad():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    ours = weighted_causal_lm_loss(out.logits, batch["labels"], batch["weights"])
    assert torch.allclose(ours, out.loss, atol=1e-5)


def test_zero_weight_tokens_have_no_effect_on_loss_or_gradient():
    torch.manual_seed(0)
    logits = torch.randn(1, 6, 11, requires_grad=True)
    labels = torch.tensor([[IGNORE_INDEX, 3, 4, 5, 6, 7]])
    weights = torch.tensor([[0.0, 1.0, 0.5, 0.0, 1.0, 0.25]])
    loss = weighted_causal_lm_loss(logits, labels, weights)
    changed = labels.clone()
    changed[0, 3] = 9  # the target of a zero-weight token
    assert torch.allclose(loss, weighted_causal_lm_loss(logits, changed, weights))
    loss.backward()
    assert logits.grad[0, 2].abs().sum() == 0  # position 2 predicts the zero-weight token 3
    assert logits.grad[0, 1].abs().sum() > 0

    expected = (
        sum(
            w * torch.nn.functional.cross_entropy(logits[0, t - 1], labels[0, t])
            for t, w in [(1, 1.0), (2, 0.5), (4, 1.0), (5, 0.25)]
        )
        / 2.75
    )
    assert torch.allclose(loss, expected)
    assert weighted_causal_lm_loss(logits, labels, torch.zeros_like(weights)).item() == 0.0


def test_trainer_runs_and_loss_decreases(tokenizer, tmp_path, tiny_llama):
    from transformers import TrainingArguments

    ids, labels, weights = token_weights(tokenizer, PROMPT, RESPONSE, sentence_spans(), [0.9, 0.1, 0.6])
    ids2, labels2, weights2 = token_weights(tokenizer, PROMPT, RESPONSE, sentence_spans(), [0.9, 0.1, 0.6], mode="mask")
    examples = [
        {"input_ids": ids, "labels": labels, "weights": weights},
        {"input_ids": ids2, "labels": labels2, "weights": weights2},
    ] * 4
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=20,
        per_device_train_batch_size=2,
        learning_rate=3e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        remove_unused_columns=False,
        gradient_accumulation_steps=1,
        seed=0,
    )
    trainer = WeightedSFTTrainer(
        model=tiny_llama(),
        args=args,
        train_dataset=examples,
        data_collator=WeightedSFTCollator(tokenizer.pad_token_id),
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 20
    assert losses[-1] < 0.5 * losses[0], losses

    batch = trainer.data_collator(examples[:2])
    model = trainer.model.eval()
    with torch.no_grad():
        used = trainer.compute_loss(model, batch)
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert torch.allclose(used, weighted_causal_lm_loss(outputs.logits, batch["labels"], batch["weights"]))
    assert not torch.allclose(used, outputs.loss)  # the weights really change the loss


def test_trainer_refuses_to_drop_weights_column(tokenizer, tmp_path, tiny_llama):
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    with pytest.raises(ConfigError, match="remove_unused_columns=False"):
        WeightedSFTTrainer(model=tiny_llama(), args=args, data_collator=WeightedSFTCollator(0))


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
