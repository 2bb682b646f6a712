"""SmolLM2-135M-Instruct as a teacher: constrained decoding in hf_local, and a real server (transformers serve).

Marked real_model (``make test-real``): each test takes tens of seconds to minutes on 2 CPU cores.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from adaptlab.models.gguf import resolve_model
from adaptlab.synth import generate as gen
from adaptlab.synth.schema import Schema
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.hf_local import HFLocalTeacher
from adaptlab.teacher.openai_compat import OpenAICompatTeacher
from adaptlab.teacher.prompts import load_prompt
from adaptlab.teacher.runner import TeacherRunner
from adaptlab.teacher.schema_check import is_schema_prefix, schema_problem
from adaptlab.teacher.serve_process import transformers_serve

pytestmark = pytest.mark.real_model

SCHEMA = Schema(subject="SPECIES", entities=[{"name": "SPECIES"}, {"name": "HABITAT"}, {"name": "FEEDING"}],
                relations=[{"name": "live_in", "head": "SPECIES", "tail": "HABITAT"},
                           {"name": "feed_on", "head": "SPECIES", "tail": "FEEDING"}])


@pytest.fixture(scope="module")
def smollm2_dir(smollm2_gguf) -> str:
    return str(resolve_model(smollm2_gguf, "teacher.model"))


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Two threads per process on a shared 2-core machine made generation ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synth_requests(max_tokens: int) -> list:
    sampling = gen.Sampling(temperature=0.7, max_tokens=max_tokens, seed=0)
    subjects = gen.subject_requests(load_prompt("subjects", "adaptlab.synth"), SCHEMA, ["amphibians", "birds"], 4,
                                    sampling)
    sentences = gen.sentence_requests(load_prompt("sentences", "adaptlab.synth"), SCHEMA,
                                      [gen.Subject("Olm", "Proteus anguinus", "amphibians")], 3, 1, sampling)
    return subjects + sentences


def test_constrained_smollm2_answers_are_schema_valid(smollm2_gguf):
    teacher = HFLocalTeacher.from_config(TeacherConfig(backend="hf_local", model=str(smollm2_gguf), device="cpu"))
    requests = synth_requests(max_tokens=512)

    async def go():
        return await asyncio.gather(*(teacher.complete(r) for r in requests))

    answers = asyncio.run(go())
    for request, answer in zip(requests, answers):
        assert answer.constrained is True and answer.finish_reason == "stop", answer.text[-200:]
        assert schema_problem(answer.text, request.json_schema) is None
    described = teacher.describe()
    assert described["constraint_seconds"] < 0.2 * described["generate_seconds"]


def test_transformers_serve_ignores_response_format_and_is_counted(smollm2_dir, tmp_path):
    with transformers_serve(smollm2_dir, tmp_path / "serve.log") as served:
        teacher = OpenAICompatTeacher(smollm2_dir, api_key="EMPTY", api_key_env="UNSET", base_url=served.base_url)
        config = TeacherConfig(backend="openai", model=smollm2_dir, cache=False, concurrency=1)
        runner = TeacherRunner(teacher, config, progress=False)

        async def ask_and_close():
            try:
                return await runner.run(synth_requests(max_tokens=96)[:2])
            finally:
                await teacher.aclose()

        outcomes = asyncio.run(ask_and_close())
    assert all(o.ok and o.response.constrained for o in outcomes)
    invalid = [o for o in outcomes if schema_problem(o.response.text, o.request.json_schema)]
    on_track = sum(o.response.finish_reason == "length" and is_schema_prefix(o.response.text, o.request.json_schema)
                   for o in invalid)
    assert (runner.stats.schema_answers, runner.stats.schema_constrained) == (2, 2)
    assert runner.stats.schema_ignored == len(invalid) - on_track >= 1  # SmolLM2 does not keep to the schema alone
    assert "Ignoring unsupported fields in the request: {'response_format'}" in (tmp_path / "serve.log").read_text()


def test_real_server_dying_mid_answer_is_retried_then_accounted(smollm2_dir, tmp_path):
    """The server is killed while it generates: a dropped connection, retried, then a failed outcome."""
    log = tmp_path / "serve.log"
    with transformers_serve(smollm2_dir, log) as served:
        teacher = OpenAICompatTeacher(smollm2_dir, api_key="EMPTY", api_key_env="UNSET", base_url=served.base_url)
        config = TeacherConfig(backend="openai", model=smollm2_dir, cache=False, max_retries=1,
                               backoff_initial_s=0.1, backoff_max_s=0.2)
        runner = TeacherRunner(teacher, config, progress=False)

        async def kill_mid_answer():
            task = asyncio.ensure_future(runner.run(synth_requests(max_tokens=2000)[:1]))
            while "Request received" not in log.read_text():
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)
            served.process.kill()
            outcomes = await task
            await teacher.aclose()
            return outcomes

        outcome = asyncio.run(kill_mid_answer())[0]
    assert not outcome.ok and outcome.attempts == 2
    assert outcome.error.startswith("connection after 2 attempts")
    assert runner.stats.retry_reasons == {"connection": 1} and runner.stats.failed == 1
