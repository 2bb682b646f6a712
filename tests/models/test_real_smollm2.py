"""SmolLM2-135M-Instruct from its GGUF (make real-models; make test-real): a real model, real numbers."""

from __future__ import annotations

import pytest

from adaptlab.lm.lm_eval_tasks import load_task
from adaptlab.lm.mc_tasks import score_mc_task
from adaptlab.models.gguf import resolve_model
from adaptlab.recipes.lm_evaluate import load_causal_lm, resolve_input

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    return load_causal_lm(resolve_model(str(smollm2_gguf)), "cpu")


def test_the_converted_model_answers_sensibly(smollm2):
    model, tokenizer = smollm2
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_multiple_choice_log_likelihoods_are_lm_evals(smollm2):
    """lm-eval 0.4.13 (--model hf) on item fb-01 gave -0.949, -3.737, -2.201, -2.579 (issue 11)."""
    model, tokenizer = smollm2
    task = load_task(resolve_input("packaged:finance_basics"))
    task.items = task.items[:1]
    result = score_mc_task(model, tokenizer, task)
    assert result["predictions"][0]["loglikelihoods"] == pytest.approx([-0.949, -3.737, -2.201, -2.579], abs=1e-3)
