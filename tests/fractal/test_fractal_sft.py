"""``adaptlab fractal sft``: sentence-weighted SFT from ``fractal score`` output, on a tiny random Llama.

The tokenizer is MiniLM's (no chat template, no BOS or EOS: the plain format, ending with [SEP]) unless a test
gives it a chat template.
"""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Trainer

from adaptlab.config import validate_config
from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.lm.packing import IGNORE_INDEX, PackedCollator
from adaptlab.lm.sft_data import encode_example, encode_examples
from adaptlab.recipes.fractal_sft import (
    FractalSFTConfig,
    join_scores_and_bags,
    scored_examples,
    sft,
    weight_counts,
)

RESPONSE = "It is 42. The moon is cheese. So the answer is 42."
SENTENCES = ["It is 42.", "The moon is cheese.", "So the answer is 42."]
BAGS = [
    {"id": "b1", "context": "What is six times seven?", "response": RESPONSE, "label": 1},
    {"id": "b2", "context": None, "sentences": ["Water boils at 100 degrees.", "I like turtles."], "label": 0},
]
SCORES = [
    {"id": "b1", "sentences": SENTENCES, "scores": [0.9, 0.1, 0.8]},
    {"id": "b2", "sentences": ["Water boils at 100 degrees.", "I like turtles."], "scores": [0.7, 0.2]},
]
FAST = ["training.progress=false", "training.warmup_steps=0", "training.logging_steps=1"]
CHAT_TEMPLATE = ("[CLS]{% for m in messages %}{{ m['role'] }}: {{ m['content'] }} [SEP] {% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def files(tmp_path):
    return write_jsonl(tmp_path / "bags.jsonl", BAGS), write_jsonl(tmp_path / "scores.jsonl", SCORES)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_llama, tokenizer):
    """The tiny random Llama and the MiniLM tokenizer saved together, as a user's model directory."""
    out = tmp_path_factory.mktemp("tiny-llama")
    tiny_llama().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def config(files, model_dir, output, **settings) -> FractalSFTConfig:
    bags, scores = files
    training = {"max_steps": 4, "learning_rate": 0.01, "warmup_steps": 0, "logging_steps": 1, "progress": False,
                **settings.pop("training", {})}
    return validate_config(FractalSFTConfig, {"model": str(model_dir), "bags": str(bags), "scores": str(scores),
                                              "output": str(output), "training": training, **settings})


def encoded(tokenizer, files, **settings):
    bags, scores = files
    items, _ = join_scores_and_bags(str(scores), str(bags))
    return encode_examples(tokenizer, scored_examples(tokenizer, items, FractalSFTConfig(**settings)), 1024)


def targets_by_weight(tokenizer, row):
    """Target tokens grouped by their loss weight: {weight: [token, ...]}."""
    grouped = {}
    for token_id, label, weight in zip(row["input_ids"], row["labels"], row["weights"]):
        if label != IGNORE_INDEX:
            grouped.setdefault(weight, []).append(tokenizer.convert_ids_to_tokens(token_id))
    return grouped


def saved_weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


def step_losses(metrics):
    return {row["step"]: row["loss"] for row in metrics["history"] if "loss" in row}


# ------------------------------------------------------------------------------------------------ end to end


def test_cli_trains_writes_the_run_and_loss_decreases(files, model_dir, tmp_path, run_cli):
    bags, scores = files
    code, out, err = run_cli("fractal", "sft", "--model", model_dir, "--scores", scores, "--bags", bags,
                             "--output", tmp_path / "run", "training.max_steps=12", "training.learning_rate=0.03",
                             "training.per_device_train_batch_size=2", *FAST)
    assert code == 0, err
    assert "trained on 2 examples (0 skipped" in out and "run directory:" in out
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    counts = metrics["counts"]
    assert counts["examples"] == 2 and counts["truncated_conversations"] == 0 and counts["masked_token_share"] == 0
    assert 0.3 < counts["mean_weight"] < 0.9
    assert metrics["data"] == {"bags": 2, "pairs_not_used": 0, "responses_joined_from_sentences": 1,
                               "without_context": 1, "scored_responses": 2, "sentences": 5,
                               "sentences_below_threshold": 2, "held_out_ids": []}
    losses = list(step_losses(metrics).values())
    assert metrics["steps"] == 12 and len(losses) == 12
    assert losses[-1] < 0.5 * losses[0], losses  # a tiny repeated example is learned
    assert "mode: weight" in (run / "config.yaml").read_text()
    report = (run / "report.html").read_text()
    assert "data:image/png;base64," in report and "The moon is cheese." in report

    from transformers import AutoModelForCausalLM, AutoTokenizer

    trained = AutoModelForCausalLM.from_pretrained(run / "model")
    assert AutoTokenizer.from_pretrained(run / "model").is_fast
    before = saved_weights(model_dir)
    assert not torch.allclose(trained.lm_head.weight, before["lm_head.weight"])


def test_the_first_step_trains_on_the_score_weighted_loss(files, model_dir, tokenizer, tmp_path):
    """The loss logged at step 1 (both examples in one batch) is sum w CE / sum w of the untrained model, computed
    here by hand from the sentence scores, and differs from the unweighted mean."""
    _, metrics = sft(config(files, model_dir, tmp_path / "run", training={"max_steps": 1,
                                                                          "per_device_train_batch_size": 2}))
    rows, _ = encoded(tokenizer, files)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    weighted, weights, plain, count = 0.0, 0.0, 0.0, 0
    with torch.no_grad():
        for row in rows:
            logits = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            for t in range(1, len(row["input_ids"])):
                if row["labels"][t] != IGNORE_INDEX:
                    ce = torch.nn.functional.cross_entropy(logits[t - 1], torch.tensor(row["labels"][t])).item()
                    weighted, weights = weighted + row["weights"][t] * ce, weights + row["weights"][t]
                    plain, count = plain + ce, count + 1
    assert step_losses(metrics)[1] == pytest.approx(weighted / weights, rel=1e-4)
    assert abs(weighted / weights - plain / count) > 1e-3  # the scores really change the loss


def test_held_out_perplexity_and_an_exact_resume(files, model_dir, tmp_path, monkeypatch):
    """eval_fraction holds out one of the two responses; a run that fails after its checkpoint at step 2 is
    continued by the same command from that checkpoint, with the losses of an uninterrupted run."""
    settings = {"eval_fraction": 0.5, "save_steps": 2, "eval_steps": 2}
    _, reference = sft(config(files, model_dir, tmp_path / "reference", **settings))
    assert len(reference["data"]["held_out_ids"]) == 1 and reference["counts"]["examples"] == 1
    evaluations = [row["step"] for row in reference["history"] if "eval_held_out_perplexity" in row]
    assert evaluations == [0, 2, 4] and reference["final_eval_held_out_perplexity"] > 1

    original = Trainer.training_step

    def crash_at_step_3(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise RuntimeError("node lost (injected)")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", crash_at_step_3)
    with pytest.raises(RuntimeError, match="injected"):
        sft(config(files, model_dir, tmp_path / "run", **settings))
    monkeypatch.setattr(Trainer, "training_step", original)
    run, resumed = sft(config(files, model_dir, tmp_path / "run", **settings))
    assert resumed["resumed_from"] == str(tmp_path / "run" / "checkpoints" / "checkpoint-2")
    assert step_losses(resumed) == pytest.approx(step_losses(reference), rel=1e-5)
    assert resumed["final_eval_held_out_perplexity"] == pytest.approx(reference["final_eval_held_out_perplexity"],
                                                                      rel=1e-5)
    assert (run.path / "model" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------ weights per token


def test_weights_fed_to_the_trainer_follow_the_sentence_scores(files, tokenizer):
    rows, stats = encoded(tokenizer, files)
    b1 = rows[0]
    assert targets_by_weight(tokenizer, b1) == {
        0.9: ["it", "is", "42", "."], 0.1: ["the", "moon", "is", "cheese", "."],
        0.8: ["so", "the", "answer", "is", "42", "."],
        1.0: ["[SEP]"],  # the plain format's end (MiniLM has no EOS: its [SEP]) is a target of weight 1
    }
    prompt_length = len(tokenizer("What is six times seven?\n\n", add_special_tokens=False)["input_ids"])
    assert b1["labels"][:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert b1["input_ids"].count(tokenizer.sep_token_id) == 1 and tokenizer.cls_token_id not in b1["input_ids"]
    weights = [w for row in rows for w, label in zip(row["weights"], row["labels"]) if label != IGNORE_INDEX]
    counts = weight_counts(stats.as_dict())
    assert counts["target_tokens"] == len(weights) and counts["zero_weight_tokens"] == 0
    assert counts["mean_weight"] == pytest.approx(sum(weights) / len(weights)) and counts["masked_token_share"] == 0

    masked, stats = encoded(tokenizer, files, mode="mask", threshold=0.5)
    assert targets_by_weight(tokenizer, masked[0]) == {1.0: ["it", "is", "42", ".", "so", "the", "answer", "is",
                                                             "42", ".", "[SEP]"]}
    counts = weight_counts(stats.as_dict())
    masked_tokens = 5 + len(tokenizer.tokenize("I like turtles."))  # "the moon is cheese ." and b2's 2nd sentence
    assert counts["zero_weight_tokens"] == masked_tokens
    assert counts["masked_token_share"] == pytest.approx(masked_tokens / (counts["target_tokens"] + masked_tokens))
    assert counts["mean_weight"] == pytest.approx(1 - counts["masked_token_share"])


def test_truncation_is_counted_and_an_example_cut_to_its_prompt_is_skipped(tokenizer, tmp_path):
    bags = write_jsonl(tmp_path / "bags.jsonl", [
        {"id": "long", "context": "Q?", "response": RESPONSE, "label": 1},
        {"id": "prompt-only", "context": "A very long question " * 5, "response": "Yes.", "label": 1}])
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        {"id": "long", "sentences": SENTENCES, "scores": [1.0, 1.0, 1.0]},
        {"id": "prompt-only", "sentences": ["Yes."], "scores": [1.0]}])
    items, _ = join_scores_and_bags(str(scores), str(bags))
    rows, stats = encode_examples(tokenizer, scored_examples(tokenizer, items, FractalSFTConfig()), max_length=10)
    assert len(rows) == 1 and stats.skipped_no_target_after_truncation == 1 and stats.truncated_conversations == 2
    assert len(rows[0]["input_ids"]) == 10
    full = len(tokenizer(f"Q?\n\n{RESPONSE}", add_special_tokens=False)["input_ids"]) + 1  # + [SEP]
    assert stats.truncated_target_tokens == (full - 10) + 3  # + "yes", "." and [SEP] of the other one


def test_chat_format_uses_the_template_and_its_end_of_turn(files, tokenizer_dir):
    from transformers import AutoTokenizer

    chat = AutoTokenizer.from_pretrained(tokenizer_dir)
    chat.chat_template = CHAT_TEMPLATE
    bags, scores = files
    items, _ = join_scores_and_bags(str(scores), str(bags))
    example = scored_examples(chat, items, FractalSFTConfig(system_prompt="Be brief."))[0]
    ids = encode_example(chat, example).input_ids
    assert chat.decode(ids) == ("[CLS] system : be brief. [SEP] user : what is six times seven? [SEP] assistant : "
                                "it is 42. the moon is cheese. so the answer is 42. [SEP]")  # [CLS] once
    row = encode_examples(chat, [example], 1024)[0][0]
    assert targets_by_weight(chat, row)[1.0] == ["[SEP]"]  # the template's end of turn, weight 1
    plain = scored_examples(chat, items, FractalSFTConfig(prompt_format="plain", prompt_template="Q: {context}\nA: "))
    assert (plain[0].prompt, plain[1].prompt) == ("Q: What is six times seven?\nA: ", "")  # a null context
    with pytest.raises(ConfigError, match="no chat_template"):
        scored_examples(AutoTokenizer.from_pretrained(tokenizer_dir), items, FractalSFTConfig(prompt_format="chat"))


def test_collated_batches_carry_the_weights(files, tokenizer):
    rows, _ = encoded(tokenizer, files)
    batch = PackedCollator(tokenizer.pad_token_id)(rows)
    assert batch["weights"].shape == batch["labels"].shape
    assert torch.equal(batch["weights"] > 0, batch["labels"] != IGNORE_INDEX)


# ------------------------------------------------------------------------------------------------ bad input


def test_all_scores_zero_in_mask_mode_is_nothing_to_train_on(files, model_dir, tmp_path, run_cli):
    bags, _ = files
    zeros = write_jsonl(tmp_path / "zeros.jsonl", [{**row, "scores": [0.0] * len(row["scores"])} for row in SCORES])
    code, _, err = run_cli("fractal", "sft", "--model", model_dir, "--scores", zeros, "--bags", bags,
                           "--output", tmp_path / "run", "mode=mask", *FAST)
    assert code == 2
    assert "nothing to train on: none of the 2 examples" in err and "threshold=0.5" in err
    assert not (tmp_path / "run").exists()  # fails before a run directory is made


def test_ids_missing_on_either_side_are_counted_and_named(files, tmp_path):
    bags, _ = files
    scores = write_jsonl(tmp_path / "other.jsonl", [SCORES[0], {**SCORES[1], "id": "stray"}])
    with pytest.raises(DataError) as caught:
        join_scores_and_bags(str(scores), str(bags))
    message = str(caught.value)
    assert "1 scored ids have no bag" in message and "'stray'" in message
    assert "1 bags have no scores" in message and "'b2'" in message


@pytest.mark.parametrize("row,message", [
    ({**SCORES[0], "sentences": ["It is 43.", *SENTENCES[1:]]}, r"record 'b1': sentence 0 \('It is 43.'\) is not"),
    ({**SCORES[0], "sentences": SENTENCES[::-1]}, "record 'b1': sentence 1"),
    ({**SCORES[0], "scores": [0.5, 0.5]}, "one score per sentence"),
    ({**SCORES[0], "scores": [0.5, 1.5, 0.5]}, r"scores\[1\] = 1.5 is not a number in \[0, 1\]"),
    ({"id": "b1", "scores": [0.5]}, "'sentences' must be a list"),
])
def test_bad_score_lines_name_the_file_line_and_id(files, row, message):
    bags, scores = files
    write_jsonl(scores, [SCORES[1], row])
    with pytest.raises(DataError, match=message) as caught:
        join_scores_and_bags(str(scores), str(bags))
    assert f"{scores}:2:" in str(caught.value)


def test_duplicate_score_ids_are_refused(files):
    bags, scores = files
    write_jsonl(scores, [*SCORES, SCORES[0]])
    with pytest.raises(DataError, match="duplicate id"):
        join_scores_and_bags(str(scores), str(bags))


@pytest.mark.parametrize("args,message", [
    ([], "no model: pass --model"),
    (["--model", "m", "mode=drop"], "mode: Input should be 'weight' or 'mask'"),
    (["--model", "m", "prompt_template=Answer"], "must contain {context}"),
    (["--model", "m", "append_eos=false"], "'append_eos' was removed"),
    (["--model", "m", "training.batch_size=2"], "'batch_size' is now 'per_device_train_batch_size'"),
    (["--model", "m", "training.seed=1", "seed=2"], "'seed' is now 'training.seed'"),
    (["--model", "m", "eval_fraction=1"], "eval_fraction: Input should be less than 1"),
])
def test_config_mistakes_exit_2(files, run_cli, args, message):
    bags, scores = files
    code, _, err = run_cli("fractal", "sft", "--scores", scores, "--bags", bags, *args)
    assert code == 2 and message in err


def test_a_missing_model_is_clear_and_leaves_no_run(files, tmp_path):
    bags, scores = files
    cfg = FractalSFTConfig(model=str(tmp_path / "missing"), bags=str(bags), scores=str(scores),
                           output=str(tmp_path / "run"))
    with pytest.raises(ModelError, match="missing"):
        sft(cfg)
    assert not (tmp_path / "run").exists()


def test_all_responses_held_out_is_refused(files, model_dir, tmp_path):
    one = write_jsonl(tmp_path / "one.jsonl", [SCORES[0]])
    bags = write_jsonl(tmp_path / "bags1.jsonl", [BAGS[0]])
    with pytest.raises(ConfigError, match="holds out all 1 scored responses"):
        sft(config((bags, one), model_dir, tmp_path / "run", eval_fraction=0.5))
