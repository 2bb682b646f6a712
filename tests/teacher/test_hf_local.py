"""The hf_local backend on a tiny random Llama that reuses the packaged MiniLM tokenizer (conftest.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch
import yaml
from transformers import AutoTokenizer

from adaptlab.teacher.base import Message, Sampling, TeacherError, TeacherRequest
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.hf_local import HFLocalTeacher


@pytest.fixture(scope="module")
def teacher(tiny_llama_dir) -> HFLocalTeacher:
    cfg = TeacherConfig(backend="hf_local", model=str(tiny_llama_dir), device="cpu", batch_size=4)
    return HFLocalTeacher.from_config(cfg)


def request(text: str, max_tokens: int = 6, temperature: float = 0.0, seed: int | None = 0) -> TeacherRequest:
    return TeacherRequest(
        messages=(Message("system", "Answer in JSON."), Message("user", text)),
        sampling=Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed),
    )


def answer_all(teacher: HFLocalTeacher, requests: list[TeacherRequest]):
    async def go():
        return await asyncio.gather(*(teacher.complete(r) for r in requests))

    return asyncio.run(go())


def count_generate_calls(teacher: HFLocalTeacher, monkeypatch) -> list[int]:
    """Wrap the model's generate; returns the batch sizes it is called with."""
    batch_sizes: list[int] = []
    original = teacher.hf_model.generate

    def counting_generate(*args, **kwargs):
        batch_sizes.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(teacher.hf_model, "generate", counting_generate)
    return batch_sizes


def test_concurrent_requests_are_batched(teacher, monkeypatch):
    batch_sizes = count_generate_calls(teacher, monkeypatch)
    texts = ["Lions live in Africa.", "Penguins swim.", "Owls hunt at night in the forest.", "Bees.", "Cats nap."]
    responses = answer_all(teacher, [request(t) for t in texts])
    assert batch_sizes == [4, 1]  # batch_size 4, in arrival order
    assert len(responses) == 5
    for text, response in zip(texts, responses):
        prompt = teacher.tokenizer.apply_chat_template(
            [{"role": "system", "content": "Answer in JSON."}, {"role": "user", "content": text}],
            add_generation_prompt=True, return_dict=False,
        )
        assert response.usage.prompt_tokens == len(prompt)  # padding is not counted
        assert 1 <= response.usage.completion_tokens <= 6
        assert response.model == teacher.model
        assert response.finish_reason in {"stop", "length"}


def test_different_sampling_goes_to_separate_batches(teacher, monkeypatch):
    batch_sizes = count_generate_calls(teacher, monkeypatch)
    requests = [request("a", max_tokens=3), request("b", max_tokens=5), request("c", max_tokens=3)]
    responses = answer_all(teacher, requests)
    assert sorted(batch_sizes) == [1, 2]
    assert [r.usage.completion_tokens <= r_max for r, r_max in zip(responses, [3, 5, 3])] == [True] * 3


def test_greedy_is_deterministic_alone_and_left_padded(teacher):
    first = answer_all(teacher, [request("Where do lions live?")])[0]
    second = answer_all(teacher, [request("Where do lions live?")])[0]
    longer = request("A much longer question about the habitat of lions?")
    padded = answer_all(teacher, [request("Where do lions live?"), longer])[0]
    assert first == second == padded
    assert first.text.strip()


def test_seeded_sampling_is_reproducible(teacher):
    sampled = [answer_all(teacher, [request("Name a bird.", temperature=1.0, seed=3)])[0] for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_max_tokens_is_respected(teacher):
    response = answer_all(teacher, [request("Tell me everything.", max_tokens=4)])[0]
    assert response.finish_reason == "length"  # the random model does not emit [SEP] in 4 steps
    assert response.usage.completion_tokens == 4


def test_eos_stops_generation_and_is_not_in_text(tiny_llama_dir):
    """Make the greedy answer's second token the EOS: the answer is one token, usage counts two."""
    probe = HFLocalTeacher.from_pretrained(str(tiny_llama_dir), device="cpu")
    prompt_ids = probe._prompt_ids(request("Stop early."))
    with torch.inference_mode():
        greedy = probe.hf_model.generate(input_ids=torch.tensor([prompt_ids]), max_new_tokens=2, do_sample=False)
    first_token, second_token = greedy[0, len(prompt_ids):].tolist()
    probe.hf_model.generation_config.eos_token_id = second_token
    stopping = HFLocalTeacher(probe.hf_model, probe.tokenizer, model_name="tiny")
    response = answer_all(stopping, [request("Stop early.", max_tokens=6)])[0]
    assert response.finish_reason == "stop"
    assert response.usage.completion_tokens == 2
    assert response.text == probe.tokenizer.decode([first_token], skip_special_tokens=True)


def test_missing_chat_template_is_an_error(tmp_path, tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(TeacherError, match="no chat template"):
        HFLocalTeacher.from_pretrained(str(tmp_path), device="cpu")


def test_missing_model_is_an_error(tmp_path):
    with pytest.raises(TeacherError, match="cannot load teacher model"):
        HFLocalTeacher.from_pretrained(str(tmp_path / "nowhere"), device="cpu")


def test_closed_teacher_refuses_requests(tiny_llama_dir):
    closing = HFLocalTeacher.from_pretrained(str(tiny_llama_dir), device="cpu")

    async def go():
        answer = await closing.complete(request("before"))
        await closing.aclose()
        with pytest.raises(TeacherError, match="closed"):
            await closing.complete(request("after"))
        return answer

    assert asyncio.run(go()).usage.completion_tokens >= 1
    assert closing.describe() == {"backend": "hf_local", "model": str(tiny_llama_dir), "device": "cpu",
                                  "batch_size": 8, "constrained": "auto", "schema_decoding": False}


def test_synth_generate_runs_on_a_local_model_and_rejects_its_gibberish(tiny_llama_dir, tmp_path, run_cli):
    """Through the registry and the whole recipe: a random model writes no JSON, and every answer is a reject."""
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({
        "schema": {"subject": "SPECIES", "entities": [{"name": "SPECIES"}, {"name": "HABITAT"}]},
        "subjects": {"given": [{"name": "Olm"}, {"name": "Axolotl"}]}, "progress": False,
        "teacher": {"backend": "hf_local", "model": str(tiny_llama_dir), "device": "cpu", "cache": False,
                    "sampling": {"temperature": 0.0, "max_tokens": 8}},
    }))
    code, out, err = run_cli("synth", "generate", config, "--output", tmp_path / "run")
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["answers"] == {"proposed": 2, "accepted": 0, "rejected": 2, "reasons": {"unparseable answer": 2}}
    assert metrics["teacher"]["backend"] == "hf_local" and metrics["runner"]["completion_tokens"] > 0
