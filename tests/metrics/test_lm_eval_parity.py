"""Our multiple-choice and perplexity numbers against lm-evaluation-harness run in the same process.

lm-eval 0.4.13 (``--model hf``) scores the same exported tasks with the same saved models: a Llama whose
tokenizer prepends BOS and a Qwen2 whose tokenizer has no BOS, the two shapes where the conventions
differ. Targets (as the parity benchmark): per-request log-likelihood |Δ| < 1e-4, identical acc and
acc_norm, perplexities within 1e-4 relative.
"""

from __future__ import annotations

import pytest

from adaptlab.lm.lm_eval_tasks import export_perplexity_task, export_task, load_task
from adaptlab.lm.mc_tasks import score_mc_task
from adaptlab.metrics.lm import perplexity
from adaptlab.recipes.lm_evaluate import load_causal_lm, resolve_input

TASKS = ("finance_basics", "finance_sentiment")
DOCUMENTS = [
    "Bond prices fell as yields rose sharply after the central bank raised its policy rate by half a point. "
    "Investors moved money into short-term deposits while they waited for the next inflation report.",
    "Dividends rose.",
    "The fund's managers said that diversification across sectors reduced the risk of any single company's "
    "losses, although fees remained higher than those of a passive index fund tracking the same market.",
]


def run_lm_eval(model_dir, include_dirs, tasks, max_length=None) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=[str(d) for d in include_dirs], include_defaults=False)
    model = HFLM(pretrained=str(model_dir), device="cpu", batch_size=4, dtype="float32", max_length=max_length)
    return lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, log_samples=True,
                                   num_fewshot=0, random_seed=0, numpy_random_seed=0, torch_random_seed=0)


@pytest.mark.parametrize("shape", ["llama-bos", "qwen2-no-bos"])
def test_multiple_choice_equals_lm_eval(scoring_models, tmp_path, shape):
    folders = [export_task(resolve_input(f"packaged:{name}"), tmp_path / name)[2].parent for name in TASKS]
    reference = run_lm_eval(scoring_models[shape], folders, TASKS)
    model, tokenizer = load_causal_lm(str(scoring_models[shape]), "cpu")
    for name in TASKS:
        ours = score_mc_task(model, tokenizer, load_task(resolve_input(f"packaged:{name}")), batch_size=3)
        theirs = {sample["doc"]["id"]: [ll for ll, _ in sample["filtered_resps"]]
                  for sample in reference["samples"][name]}
        gaps = [abs(a - b) for p in ours["predictions"] for a, b in zip(p["loglikelihoods"], theirs[p["id"]])]
        assert len(gaps) == sum(len(v) for v in theirs.values()) and max(gaps) < 1e-4
        assert ours["acc"] == reference["results"][name]["acc,none"]
        assert ours["acc_norm"] == reference["results"][name]["acc_norm,none"]
        spread = [max(p["loglikelihoods"]) - min(p["loglikelihoods"]) for p in ours["predictions"]]
        assert min(spread) > 0.01  # sharp models: a convention slip would change the numbers, not hide in noise


@pytest.mark.parametrize("shape", ["llama-bos", "qwen2-no-bos"])
def test_rolling_perplexity_equals_lm_eval(scoring_models, tmp_path, shape):
    export_perplexity_task("held_out", DOCUMENTS, "test", tmp_path / "ppl")
    reference = run_lm_eval(scoring_models[shape], [tmp_path / "ppl"], ["held_out"], max_length=16)
    model, tokenizer = load_causal_lm(str(scoring_models[shape]), "cpu")
    ours = perplexity(model, tokenizer, DOCUMENTS, max_length=16, batch_size=3)
    assert ours["windows"] > len(DOCUMENTS)  # long documents take several windows
    theirs = [sample["filtered_resps"][0] for sample in sorted(reference["samples"]["held_out"],
                                                               key=lambda s: s["doc_id"])]
    assert ours["document_loglikelihoods"] == pytest.approx(theirs, rel=1e-5)  # lm-eval sums windows in float32
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours[metric] == pytest.approx(reference["results"]["held_out"][f"{metric},none"], rel=1e-4)
