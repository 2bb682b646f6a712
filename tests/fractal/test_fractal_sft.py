"""``adaptlab fractal sft``: sentence-weighted SFT from ``fractal score`` output, on a tiny random Llama."""

from __future__ import annotations

import json

import pytest
import torch

from adaptlab.errors import ConfigError, DataError, ModelError
from adaptlab.fractal.use import IGNORE_INDEX
from adaptlab.recipes.fractal_sft import (
    FractalSFTConfig,
    build_examples,
    join_scores_and_bags,
    render_prompt,
    sft,
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
FAST = ["training.progress=false", "training.warmup=0", "training.logging_steps=1"]


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


def targets_by_weight(tokenizer, example):
    """Target tokens grouped by their loss weight: {weight: [token, ...]}."""
    grouped = {}
    for token_id, label, weight in zip(example["input_ids"], example["labels"], example["weights"]):
        if label != IGNORE_INDEX:
            grouped.setdefault(weight, []).append(tokenizer.convert_ids_to_tokens(token_id))
    return grouped


def saved_weights(model_dir):
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


# ------------------------------------------------------------------------------------------------ end to end


def test_cli_trains_writes_the_run_and_loss_decreases(files, model_dir, tmp_path, run_cli):
    bags, scores = files
    code, out, err = run_cli("fractal", "sft", "--model", model_dir, "--scores", scores, "--bags", bags,
                             "--output", tmp_path / "run", "training.max_steps=12", "training.learning_rate=0.03",
                             "training.batch_size=2", *FAST)
    assert code == 0, err
    assert "trained on 2 examples (0 skipped" in out and "run directory:" in out
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    counts = metrics["counts"]
    assert counts["examples"] == 2 and counts["truncated"] == 0 and counts["masked_token_share"] == 0.0
    assert 0.3 < counts["mean_weight"] < 0.9
    assert metrics["data"] == {"bags": 2, "pairs_not_used": 0, "responses_joined_from_sentences": 1,
                               "without_context": 1, "scored_responses": 2, "sentences": 5,
                               "sentences_below_threshold": 2}
    losses = [entry["loss"] for entry in metrics["history"]]
    assert metrics["train_steps"] == 12 and len(losses) == 12
    assert losses[-1] < 0.5 * losses[0], losses  # a tiny repeated example is learned
    assert "mode: weight" in (run / "config.yaml").read_text()
    report = (run / "report.html").read_text()
    assert "data:image/png;base64," in report and "The moon is cheese." in report

    from transformers import AutoModelForCausalLM, AutoTokenizer

    trained = AutoModelForCausalLM.from_pretrained(run / "model")
    assert AutoTokenizer.from_pretrained(run / "model").is_fast
    before = saved_weights(model_dir)
    assert not torch.allclose(trained.lm_head.weight, before["lm_head.weight"])


def test_a_zero_weight_sentence_gets_no_gradient(model_dir, tmp_path):
    """Training on "A. B." with B weighted 0 gives the same model as training on "A." alone.

    Without EOS, B's tokens come last, so causally nothing else depends on them: only their own loss could
    matter, and weight 0 removes it. Weight 1 for B changes the result, so the comparison is sensitive.
    """
    def train(name, response, sentences, scores):
        bags = write_jsonl(tmp_path / f"{name}-bags.jsonl",
                           [{"id": "x", "context": "Q?", "response": response, "label": 1}])
        scored = write_jsonl(tmp_path / f"{name}-scores.jsonl",
                             [{"id": "x", "sentences": sentences, "scores": scores}])
        cfg = FractalSFTConfig(model=str(model_dir), bags=str(bags), scores=str(scored), append_eos=False,
                               output=str(tmp_path / name),
                               training={"max_steps": 2, "learning_rate": 0.01, "warmup": 0, "progress": False})
        run, _ = sft(cfg)
        return saved_weights(run.model)

    with_zero = train("zero", "It is 42. The moon is cheese.", ["It is 42.", "The moon is cheese."], [1.0, 0.0])
    without = train("absent", "It is 42.", ["It is 42."], [1.0])
    with_one = train("one", "It is 42. The moon is cheese.", ["It is 42.", "The moon is cheese."], [1.0, 1.0])
    assert all(torch.allclose(with_zero[k], without[k], atol=1e-6) for k in without)
    assert not all(torch.allclose(with_one[k], without[k], atol=1e-6) for k in without)


# ------------------------------------------------------------------------------------------ weights per token


def test_weights_fed_to_the_trainer_follow_the_sentence_scores(files, tokenizer):
    bags, scores = files
    items, _ = join_scores_and_bags(str(scores), str(bags))
    weighted, counts, kept = build_examples(tokenizer, items, FractalSFTConfig())
    assert kept == [0, 1]
    b1 = weighted[0]
    assert targets_by_weight(tokenizer, b1) == {
        0.9: ["it", "is", "42", "."], 0.1: ["the", "moon", "is", "cheese", "."],
        0.8: ["so", "the", "answer", "is", "42", "."],
        1.0: ["[SEP]"],  # the tokenizer's own final [SEP] (its EOS here) becomes a target: no second one
    }
    prompt_length = len(tokenizer("What is six times seven?\n\n")["input_ids"]) - 1  # without the final [SEP]
    assert b1["labels"][:prompt_length] == [IGNORE_INDEX] * prompt_length
    assert b1["input_ids"].count(tokenizer.sep_token_id) == 1
    weights = [w for example in weighted for w, label in zip(example["weights"], example["labels"])
               if label != IGNORE_INDEX]
    assert counts["response_tokens"] == len(weights) and counts["masked_response_tokens"] == 0
    assert counts["mean_weight"] == pytest.approx(sum(weights) / len(weights)) and counts["masked_token_share"] == 0

    masked, counts, _ = build_examples(tokenizer, items, FractalSFTConfig(mode="mask", threshold=0.5))
    assert targets_by_weight(tokenizer, masked[0]) == {1.0: ["it", "is", "42", ".", "so", "the", "answer", "is",
                                                             "42", ".", "[SEP]"]}
    assert all(w == 0.0 for w, label in zip(masked[0]["weights"], masked[0]["labels"]) if label == IGNORE_INDEX)
    masked_tokens = 5 + len(tokenizer.tokenize("I like turtles."))  # "the moon is cheese ." and b2's 2nd sentence
    assert counts["masked_response_tokens"] == masked_tokens
    assert counts["masked_token_share"] == pytest.approx(masked_tokens / counts["response_tokens"])
    assert counts["mean_weight"] == pytest.approx(1 - counts["masked_token_share"])


def test_truncation_is_counted_and_an_example_cut_to_its_prompt_is_skipped(tokenizer, tmp_path):
    bags = write_jsonl(tmp_path / "bags.jsonl", [
        {"id": "long", "context": "Q?", "response": RESPONSE, "label": 1},
        {"id": "prompt-only", "context": "A very long question " * 5, "response": "Yes.", "label": 1}])
    scores = write_jsonl(tmp_path / "scores.jsonl", [
        {"id": "long", "sentences": SENTENCES, "scores": [1.0, 1.0, 1.0]},
        {"id": "prompt-only", "sentences": ["Yes."], "scores": [1.0]}])
    items, _ = join_scores_and_bags(str(scores), str(bags))
    examples, counts, kept = build_examples(tokenizer, items, FractalSFTConfig(max_length=10))
    assert kept == [0] and counts["skipped_nothing_to_learn"] == 1 and counts["truncated"] == 2
    assert len(examples[0]["input_ids"]) == 10
    full = len(tokenizer(f"Q?\n\n{RESPONSE}")["input_ids"])  # [CLS] q ? ... [SEP]: everything after 10 is response
    assert counts["truncated_response_tokens"] == (full - 10) + 3  # + "yes", "." and [SEP] of the other one


# ------------------------------------------------------------------------------------------------ prompts


def test_chat_template_renders_the_prompt_without_doubling_the_first_token(tokenizer_dir):
    from transformers import AutoTokenizer

    chat = AutoTokenizer.from_pretrained(tokenizer_dir)
    chat.chat_template = ("[CLS]{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}assistant: {% endif %}")
    cfg = FractalSFTConfig(system_prompt="Be brief.")
    assert render_prompt(chat, "What?", cfg) == "system: Be brief.\nuser: What?\nassistant: "
    assert render_prompt(chat, "What?", cfg.model_copy(update={"prompt_format": "plain"})) == "What?\n\n"
    assert render_prompt(chat, None, cfg.model_copy(update={"prompt_format": "plain"})) == ""
    plain = AutoTokenizer.from_pretrained(tokenizer_dir)
    assert render_prompt(plain, "What?", FractalSFTConfig(prompt_template="Q: {context}\nA: ")) == "Q: What?\nA: "
    with pytest.raises(ConfigError, match="no chat_template"):
        render_prompt(plain, "What?", FractalSFTConfig(prompt_format="chat"))


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
])
def test_config_mistakes_exit_2(files, run_cli, args, message):
    bags, scores = files
    code, _, err = run_cli("fractal", "sft", "--scores", scores, "--bags", bags, *args)
    assert code == 2 and message in err


def test_unknown_eos_token_and_missing_model_are_clear(files, tokenizer, tmp_path):
    bags, scores = files
    items, _ = join_scores_and_bags(str(scores), str(bags))
    with pytest.raises(ConfigError, match="not a token of this tokenizer"):
        build_examples(tokenizer, items, FractalSFTConfig(eos_token="<|no-such-token|>"))
    cfg = FractalSFTConfig(model=str(tmp_path / "missing"), bags=str(bags), scores=str(scores))
    with pytest.raises(ModelError, match="cannot load a tokenizer"):
        sft(cfg)
