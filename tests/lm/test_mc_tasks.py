"""Multiple-choice tasks: the JSONL format and its errors, and log-likelihood scoring checked by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from adaptlab.errors import DataError
from adaptlab.lm.mc_tasks import build_requests, load_mc_task, score_mc_task
from adaptlab.metrics.loglikelihood import encode_pair
from adaptlab.recipes.lm_evaluate import resolve_input


def write_task(path: Path, *lines: dict) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


class UnigramLM(torch.nn.Module):
    """A 'model' whose next-token logits are one fixed vector, whatever the context: LL is hand-computable."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits)
        self.config = SimpleNamespace(max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, use_cache=None):
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_packaged_example_tasks_load_and_render():
    sentiment = load_mc_task(resolve_input("packaged:finance_sentiment"), "sentiment")
    basics = load_mc_task(resolve_input("packaged:finance_basics"))
    assert sentiment.name == "sentiment" and basics.name == "finance_basics"
    assert len(sentiment.items) == 12 and len(basics.items) == 12
    assert sentiment.shared_choices == ["positive", "negative"] and basics.shared_choices is None
    first = sentiment.items[0]
    assert first.prompt.endswith("Target: net sales of the electronics segment\nSentiment:")
    assert first.continuations == [" positive", " negative"] and first.id == "fs-01" and first.line == 2
    quiz = basics.items[0]
    assert "\nA. A government bond\nB. A bank deposit\n" in quiz.prompt and quiz.prompt.endswith("\nAnswer:")
    assert quiz.continuations == [" A", " B", " C", " D"] and quiz.answer == 2


def test_default_templates_and_optional_context(tmp_path):
    path = write_task(tmp_path / "t.jsonl",
                      {"question": "Is cash risky?", "choices": ["yes", "no"], "answer": 1},
                      {"question": "Q2", "context": "Some context.", "choices": ["a", "b", "c"], "answer": 0, "id": 7})
    task = load_mc_task(path)
    assert task.items[0].prompt == "Question: Is cash risky?\nAnswer:"  # no leading blank line without context
    assert task.items[1].prompt == "Some context.\nQuestion: Q2\nAnswer:"
    assert task.items[0].id == "line 1" and task.items[1].id == "7"
    assert task.items[1].continuations == [" a", " b", " c"]


@pytest.mark.parametrize(("lines", "where", "message"), [
    ([{"question": "q", "choices": ["a", "b"], "answer": 2}], 1, "answer 2 is out of range: there are 2 choices"),
    ([{"question": "q", "choices": ["a", "b"], "answer": 0}, {"question": "q", "choices": ["a"], "answer": 0}],
     2, "has 1 choice(s); a multiple-choice item needs at least 2"),
    ([{"question": "q", "choices": ["a", "b"]}], 1, "missing field 'answer'"),
    ([{"question": "q", "answer": 0}], 1, "missing field 'choices'"),
    ([{"question": "q", "choices": ["a", "b"], "answer": 0}, {"choices": ["a", "b"], "answer": 0}],
     2, "missing field 'question' used by the prompt template"),
    ([{"task": {"prompt": "{sentence} {target}:", "choices": ["x", "y"]}}, {"sentence": "s", "answer": 0}],
     1, "unknown placeholder {target} in the prompt template"),
    ([{"task": {"choice": " {answer_text}"}}, {"question": "q", "choices": ["a", "b"], "answer": 0}],
     1, "unknown placeholder {answer_text} in the choice template"),
    ([{"task": {"prompt": "{question}", "few_shot": 3}}], 1, "unknown header key(s) ['few_shot']"),
    ([{"question": "q", "choices": ["a", "a"], "answer": 0}], 1, "repeats a choice"),
    ([{"question": "q", "choices": ["a", "b"], "answer": True}], 1, "'answer' must be an integer index"),
    ([{"task": {"prompt": "{question}"}}], None, "the task has no items"),
])
def test_format_errors_name_file_and_line(tmp_path, lines, where, message):
    path = write_task(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(DataError) as caught:
        load_mc_task(path)
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"{path}:{where}: " if where else f"{path}: ")


@pytest.fixture(scope="module")
def bpe(scoring_models):
    """The Qwen2-like tokenizer (no BOS): the tokens of a text are exactly what lm-eval scores."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(scoring_models["qwen2-no-bos"])


def test_acc_and_acc_norm_pick_by_total_and_per_character_likelihood(bpe, tmp_path):
    """' up' is likelier in total, ' downward' per character (lm-eval's acc_norm: LL / len(choice))."""
    up = encode_pair(bpe, "Prices went", " up")[0].continuation
    down = encode_pair(bpe, "Prices went", " downward")[0].continuation
    assert not set(up) & set(down)
    logits = torch.zeros(len(bpe))
    logits[up], logits[down] = 3.0, 2.0
    log_probs = torch.log_softmax(logits, -1)
    expected = [float(log_probs[up].sum()), float(log_probs[down].sum())]
    assert expected[0] > expected[1] and expected[1] / len("downward") > expected[0] / len("up")
    path = write_task(tmp_path / "t.jsonl", {"task": {"prompt": "Prices went", "choices": ["up", "downward"]}},
                      {"answer": 1}, {"answer": 0}, {"answer": 1})
    result = score_mc_task(UnigramLM(logits), bpe, load_mc_task(path), batch_size=2)
    assert result["predictions"][0]["loglikelihoods"] == pytest.approx(expected, abs=1e-5)
    assert [p["pred"] for p in result["predictions"]] == [0, 0, 0]
    assert [p["pred_norm"] for p in result["predictions"]] == [1, 1, 1]
    assert result["acc"] == pytest.approx(1 / 3) and result["acc_norm"] == pytest.approx(2 / 3)
    assert (result["correct"], result["correct_norm"], result["items"]) == (1, 2, 3)
    # shared choices make it a classification task: macro-F1 over {up, downward}
    assert result["macro_f1"] == pytest.approx((0.5 + 0.0) / 2)  # 'up' P=1/3 R=1 -> F1 0.5; 'downward' never predicted
    assert result["macro_f1_norm"] == pytest.approx((0.0 + 0.8) / 2)


def test_batching_does_not_change_the_scores(scoring_models, bpe, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(scoring_models["qwen2-no-bos"])
    path = write_task(tmp_path / "t.jsonl",
                      {"question": "Which asset is safest?", "choices": ["a deposit", "a lottery ticket", "stocks"],
                       "answer": 0},
                      {"question": "Rates rise; bond prices?", "context": "A longer context sentence about markets.",
                       "choices": ["fall", "rise"], "answer": 0})
    task = load_mc_task(path)
    batched = score_mc_task(model, bpe, task, batch_size=5)["predictions"]
    one_by_one = score_mc_task(model, bpe, task, batch_size=1)["predictions"]
    for a, b in zip(batched, one_by_one):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=1e-5)


def test_boundary_merges_are_counted_and_a_choice_that_adds_no_token_is_an_error(bpe, tmp_path):
    path = write_task(tmp_path / "t.jsonl", {"task": {"prompt": "Investors move", "choice": "{choice}",
                                                      "choices": ["d", "s"]}}, {"answer": 0})
    with pytest.raises(DataError, match=r"t.jsonl:2: choice 0 \('d'\) adds no token after the prompt"):
        build_requests(bpe, load_mc_task(path), max_length=64)
    path = write_task(tmp_path / "u.jsonl", {"task": {"prompt": "Investors move", "choice": "{choice}",
                                                      "choices": ["ds", "d by"]}}, {"answer": 0})
    built = build_requests(bpe, load_mc_task(path), max_length=64)
    # 'move' + 'ds' tokenizes as 'moved' + 's': the context's tokens are not a prefix; lm-eval slices all the same
    assert built.boundary_mismatches >= 1 and bpe.convert_ids_to_tokens(built.requests[0].continuation) == ["s"]


def test_long_prompts_lose_their_start_and_are_counted(bpe, tmp_path):
    long_question = " ".join(["word"] * 40)
    path = write_task(tmp_path / "t.jsonl", {"question": long_question, "choices": ["yes", "no"], "answer": 0},
                      {"question": "short", "choices": ["yes", "no"], "answer": 1})
    task = load_mc_task(path)
    built = build_requests(bpe, task, max_length=16)
    assert built.truncated_items == 1
    result = score_mc_task(UnigramLM(torch.zeros(len(bpe))), bpe, task, max_length=16)
    assert result["truncated_items"] == 1 and result["max_length"] == 16
    tokens = len(built.requests[0].continuation)
    assert result["predictions"][0]["loglikelihoods"][0] == pytest.approx(-tokens * math.log(len(bpe)), abs=1e-4)
    with pytest.raises(DataError, match=r"t.jsonl:1: choice 0 is \d+ tokens long, more than max_length 1"):
        build_requests(bpe, task, max_length=1)


def test_a_prompt_without_tokens_uses_the_prefix_token(bpe, tmp_path):
    path = write_task(tmp_path / "t.jsonl", {"task": {"prompt": "{context}"}}, {"choices": ["a", "b"], "answer": 0})
    built = build_requests(bpe, load_mc_task(path), max_length=64)
    assert [r.context for r in built.requests] == [[bpe.eos_token_id]] * 2  # lm-eval's empty-context rule
