"""Constrained JSON decoding in hf_local, on a tiny random model with a byte-level BPE tokenizer."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from adaptlab.teacher.base import Message, Sampling, TeacherError, TeacherRequest, cache_key
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.constrained import _unpack_bits
from adaptlab.teacher.hf_local import HFLocalTeacher
from adaptlab.teacher.runner import TeacherRunner
from adaptlab.teacher.schema_check import schema_problem

# Bounded strings and arrays and no extra keys: a random model under the grammar must finish within about 60 tokens.
ENTITIES_SCHEMA = {
    "type": "object", "required": ["entities"], "additionalProperties": False,
    "properties": {"entities": {"type": "array", "maxItems": 2, "items": {
        "type": "object", "required": ["text", "type"], "additionalProperties": False,
        "properties": {"text": {"type": "string", "maxLength": 6}, "type": {"enum": ["SPECIES", "HABITAT"]}}}}},
}
UNCOMPILABLE_SCHEMA = {"type": "object", "required": ["name"],
                       "properties": {"name": {"type": "string", "pattern": "(?<=a)b"}}}


def request(text: str, schema: dict | None = ENTITIES_SCHEMA, max_tokens: int = 96, **sampling) -> TeacherRequest:
    return TeacherRequest((Message("system", "Answer with JSON."), Message("user", text)),
                          Sampling(max_tokens=max_tokens, **{"temperature": 0.0, **sampling}), schema)


def answer_all(teacher: HFLocalTeacher, requests: list[TeacherRequest]):
    async def go():
        return await asyncio.gather(*(teacher.complete(r) for r in requests))

    return asyncio.run(go())


@pytest.fixture(scope="module")
def constrained(tiny_bpe_llama_dir) -> HFLocalTeacher:
    return HFLocalTeacher.from_config(TeacherConfig(backend="hf_local", model=str(tiny_bpe_llama_dir), device="cpu",
                                                    batch_size=8))


@pytest.fixture(scope="module")
def free(constrained) -> HFLocalTeacher:
    return HFLocalTeacher(constrained.hf_model, constrained.tokenizer, model_name=constrained.model, constrained="off")


TEXTS = ["Olms live in caves.", "The axolotl lives in canals near Mexico City and feeds on worms.", "Bees.",
         "Kakapo nest on the ground in New Zealand forests."]


def test_garbage_model_writes_schema_valid_json_only_under_constraints(constrained, free):
    bound = answer_all(constrained, [request(t) for t in TEXTS])
    loose = answer_all(free, [request(t) for t in TEXTS])
    for answer in bound:
        assert answer.constrained is True and answer.finish_reason == "stop"
        assert schema_problem(answer.text, ENTITIES_SCHEMA) is None, answer.text
        assert answer.usage.completion_tokens < 96
    assert [a.constrained for a in loose] == [False] * 4
    assert all(schema_problem(a.text, ENTITIES_SCHEMA) is not None for a in loose)
    assert constrained.describe()["schema_decoding"] is True
    assert constrained.describe()["constraint_steps"] > 0


def test_batched_rows_of_different_lengths_match_single_rows(constrained, monkeypatch):
    """Left padding, rows that finish early and rows without a schema do not disturb the other rows."""
    requests = [request(t) for t in TEXTS] + [request("No schema here, free text.", schema=None)]
    alone = [answer_all(constrained, [r])[0] for r in requests]
    batch_sizes = []
    original = constrained.hf_model.generate

    def counting(*args, **kwargs):
        batch_sizes.append(kwargs["input_ids"].shape[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(constrained.hf_model, "generate", counting)
    together = answer_all(constrained, requests)
    assert batch_sizes == [5]
    assert together == alone
    assert len({a.usage.completion_tokens for a in together[:4]}) > 1  # the rows really finish at different steps
    assert together[4].constrained is None and schema_problem(together[4].text, ENTITIES_SCHEMA) is not None


def test_sampled_rows_stay_schema_valid(constrained):
    answers = answer_all(constrained, [request(t, temperature=1.0, top_p=0.9, seed=3) for t in TEXTS])
    assert all(schema_problem(a.text, ENTITIES_SCHEMA) is None for a in answers)


def test_max_tokens_mid_json_is_truncated_and_counted(constrained):
    runner = TeacherRunner(constrained, TeacherConfig(backend="hf_local", cache=False), progress=False)
    outcomes = asyncio.run(runner.run([request(TEXTS[1], max_tokens=5)]))
    answer = outcomes[0].response
    assert answer.finish_reason == "length" and answer.usage.completion_tokens == 5
    assert answer.text.startswith('{"entities": ') or answer.text.startswith('{"entities":')
    assert schema_problem(answer.text, ENTITIES_SCHEMA).startswith("not one JSON document")
    stats = runner.stats
    assert (stats.schema_answers, stats.schema_valid, stats.schema_constrained, stats.schema_ignored) == (1, 0, 1, 0)


def test_cache_keys_separate_constrained_answers_only(constrained, free):
    with_schema, without = request("a"), request("a", schema=None)
    assert free.cache_key(with_schema) == cache_key("hf_local", free.model, with_schema)  # keys of old caches
    assert constrained.cache_key(with_schema) != free.cache_key(with_schema)
    assert constrained.cache_key(without) == free.cache_key(without)


def test_uncompilable_schema_is_a_teacher_error_naming_the_request(constrained):
    with pytest.raises(TeacherError, match=r"request \[.*cannot be compiled.*look-around.*teacher.constrained: off"):
        answer_all(constrained, [request("a", schema=UNCOMPILABLE_SCHEMA)])
    with pytest.raises(TeacherError, match="the JSON schema of the names list cannot be compiled"):
        constrained.prepare_json_schema(UNCOMPILABLE_SCHEMA, "the names list")
    with pytest.raises(TeacherError, match="not a valid JSON Schema"):
        constrained.prepare_json_schema({"type": "no-such-type"}, "the names list")


def test_wordpiece_tokenizer_auto_decodes_freely_and_on_refuses(tiny_llama_dir):
    auto = HFLocalTeacher.from_pretrained(str(tiny_llama_dir), device="cpu")
    assert auto.describe()["schema_decoding"] is False
    answer = answer_all(auto, [request("a", max_tokens=4)])[0]
    assert answer.constrained is False
    with pytest.raises(TeacherError, match="teacher.constrained is 'on' but llguidance cannot read the tokenizer"):
        HFLocalTeacher(auto.hf_model, auto.tokenizer, model_name="tiny", constrained="on")


def test_unpack_bits_reads_llguidance_word_order():
    words = torch.tensor([[0b101, -(2**31)]], dtype=torch.int32)  # bits 0, 2 of word 0; bit 31 of word 1
    allowed = _unpack_bits(words, 64)
    assert allowed.nonzero()[:, 1].tolist() == [0, 2, 63]


def test_synth_generate_with_an_uncompilable_schema_exits_2_and_writes_nothing(tiny_bpe_llama_dir, tmp_path,
                                                                                run_cli, monkeypatch):
    import yaml

    from adaptlab.synth import generate as gen

    monkeypatch.setattr(gen, "subjects_schema", lambda per_group: UNCOMPILABLE_SCHEMA)
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({
        "schema": {"subject": "SPECIES", "entities": [{"name": "SPECIES"}, {"name": "HABITAT"}]},
        "subjects": {"groups": ["amphibians"], "per_group": 2}, "progress": False,
        "teacher": {"backend": "hf_local", "model": str(tiny_bpe_llama_dir), "device": "cpu", "cache": False},
    }))
    code, out, err = run_cli("synth", "generate", config, "--output", tmp_path / "run")
    assert code == 2
    assert "subject list answers" in err and "cannot be compiled" in err and "teacher.constrained: off" in err
    assert not (tmp_path / "run").exists()


def test_synth_generate_on_a_garbage_model_accepts_answers_only_when_constrained(tiny_bpe_llama_dir, tmp_path,
                                                                                  run_cli):
    """The whole recipe: subjects given, sentence answers decoded under the sentences schema are valid JSON."""
    import yaml

    metrics = {}
    for mode in ("on", "off"):
        config = tmp_path / f"{mode}.yaml"
        config.write_text(yaml.safe_dump({
            "schema": {"subject": "SPECIES", "entities": [{"name": "SPECIES"}, {"name": "HABITAT"}]},
            "subjects": {"given": [{"name": "Olm"}, {"name": "Axolotl"}]}, "progress": False,
            "teacher": {"backend": "hf_local", "model": str(tiny_bpe_llama_dir), "device": "cpu", "cache": False,
                        "constrained": mode, "sampling": {"temperature": 0.0, "max_tokens": 48}},
        }))
        code, out, err = run_cli("synth", "generate", config, "--output", tmp_path / mode)
        assert code == 0, err
        metrics[mode] = json.loads((tmp_path / mode / "metrics.json").read_text())
    on, off = metrics["on"]["runner"], metrics["off"]["runner"]
    assert (on["schema_answers"], on["schema_constrained"], on["schema_ignored"]) == (2, 2, 0)
    assert (off["schema_answers"], off["schema_valid"], off["schema_constrained"]) == (2, 0, 0)
    assert metrics["off"]["answers"]["reasons"] == {"unparseable answer": 2}
    assert metrics["on"]["teacher"]["schema_decoding"] is True
