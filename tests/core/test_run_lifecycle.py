"""One run lifecycle for every command (:func:`adaptlab.runs.open_run`): each command that leaves a run directory
leaves a complete one (config.yaml, metrics.json, report.html, log.txt), and a failing one leaves none."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from adaptlab import example_configs
from adaptlab.runs import RunDir, open_run, partial_dir, unfinished_runs_removed

ROOT = Path(__file__).resolve().parents[2]
RUN_FILES = ("config.yaml", "metrics.json", "report.html", "log.txt")
FACTS = ["The Nile flows north into the Mediterranean Sea.", "Water boils at 100 degrees Celsius at sea level."]
NOISE = ["I really like the colour of this page.", "Thanks for asking such a nice question!"]
TEXT = "The bank raised its deposit rate.\n\nBond prices fell as yields rose sharply.\n\nA third document.\n"
API_KEY = "sk-test-lifecycle"
FINANCE = "market bank rate yield bond equity asset fund loan credit risk price cash debt tax profit".split()


@dataclass
class Inputs:
    """What a case may use to build its tiny inputs: a folder, the session's fixtures, servers kept open."""

    folder: Path
    request: pytest.FixtureRequest
    servers: ExitStack

    def fixture(self, name: str):
        return self.request.getfixturevalue(name)


def fractal_bags(inputs: Inputs) -> Path:
    from adaptlab.fractal.bags import Bag, write_bags

    bags = [Bag(id=f"b{i}", context="Tell me a fact.", sentences=[NOISE[i % 2]] + ([FACTS[i % 2]] if i % 2 else []),
                offsets=None, label=float(i % 2), sentence_labels=[0.0] + ([1.0] if i % 2 else []), group=f"q{i // 2}")
            for i in range(12)]
    return write_bags(bags, inputs.folder / "bags.jsonl")


def fractal_train(inputs: Inputs, run: Path) -> list:
    return ["fractal", "train", "--data", fractal_bags(inputs), "--output", run, f"cache_dir={inputs.folder / 'c'}",
            "train.epochs=2", "train.hidden=8"]


def fractal_evaluate(inputs: Inputs, run: Path) -> list:
    return ["fractal", "evaluate", "--data", fractal_bags(inputs), "--output", run, f"cache_dir={inputs.folder / 'c'}",
            "folds=2", "seeds=[0]", "methods=[cosine,bagloss]", "train.epochs=2", "train.hidden=8"]


def causal_models(inputs: Inputs) -> dict[str, Path]:
    """base / domain / instruct: the same tiny Llama with three output-layer scales, each with the tokenizer."""
    tiny_llama, tokenizer = inputs.fixture("tiny_llama"), inputs.fixture("tokenizer")
    paths = {}
    for name, scale in (("base", 1.0), ("domain", 1.5), ("instruct", 2.0)):
        paths[name] = inputs.folder / name
        tiny_llama(scale).save_pretrained(paths[name])
        tokenizer.save_pretrained(paths[name])
    return paths


def merge_config(inputs: Inputs, run: Path) -> list:
    models = causal_models(inputs)
    config = inputs.folder / "merge.yaml"
    config.write_text(yaml.safe_dump({"method": "linear", "progress": False,
                                      "models": [{"model": str(models["domain"])}, {"model": str(models["base"])}]}))
    return ["merge", config, "--output", run]


def merge_chat_vector(inputs: Inputs, run: Path) -> list:
    models = causal_models(inputs)
    return ["merge", "chat-vector", "--base", models["base"], "--instruct", models["instruct"], "--domain",
            models["domain"], "--output", run, "--scale", "0.5"]


def merge_search(inputs: Inputs, run: Path) -> list:
    models = causal_models(inputs)
    (inputs.folder / "domain.txt").write_text(TEXT)
    config = inputs.folder / "search.yaml"
    config.write_text(yaml.safe_dump({
        "merge": {"method": "task_arithmetic", "base_model": str(models["base"]),
                  "models": [{"model": str(models["domain"])}, {"model": str(models["instruct"])}]},
        "vary": str(models["instruct"]), "grid": [0.0, 1.0], "domain_text": str(inputs.folder / "domain.txt"),
        "max_length": 16, "progress": False}))
    return ["merge", "search", config, f"output={run}"]


def stub_teacher(inputs: Inputs, answer: Callable[[dict], str]) -> str:
    from adaptlab.teacher.stub_server import StubServer

    inputs.fixture("monkeypatch").setenv("OPENAI_API_KEY", API_KEY)
    return inputs.servers.enter_context(StubServer(answer, api_key=API_KEY)).base_url


def synth_generate(inputs: Inputs, run: Path) -> list:
    from adaptlab.synth.scripted import scripted_answer

    cfg = yaml.safe_load((example_configs.path("synth_biospecies")).read_text())
    cfg["subjects"] = {"groups": ["amphibians"], "per_group": 2}
    cfg["teacher"].update(base_url=stub_teacher(inputs, scripted_answer), requests_per_minute=None,
                          tokens_per_minute=None, cache_path=str(inputs.folder / "cache.sqlite"))
    config = inputs.folder / "synth.yaml"
    config.write_text(yaml.safe_dump({**cfg, "progress": False}))
    return ["synth", "generate", config, "--output", run]


def synth_review_import(inputs: Inputs, run: Path) -> list:
    from adaptlab.data.records import Record, Span
    from adaptlab.recipes.review import load_schema
    from adaptlab.synth.review import export_review

    schema = example_configs.path("synth_biospecies")
    records = [Record("Axolotls live in lakes.", [Span(0, 8, "SPECIES"), Span(17, 22, "HABITAT")],
                      meta={"id": "synth-000000", "teacher": "gpt-4o"})]
    export_review(records, inputs.folder / "review", load_schema(schema))
    return ["synth", "review", "import", inputs.folder / "review" / "tasks.json", "--schema", schema, "--output", run]


def teacher_zero_shot(inputs: Inputs, run: Path) -> list:
    from adaptlab.data.records import Record, Span, write_records

    write_records([Record("Otters eat fish.", [Span(0, 6, "SPECIES"), Span(11, 15, "FEEDING")])],
                  inputs.folder / "gold.jsonl")
    config = inputs.folder / "zs.yaml"
    config.write_text(yaml.safe_dump({"progress": False, "teacher": {
        "backend": "openai", "base_url": stub_teacher(inputs, lambda body: '["fish"]'),
        "cache_path": str(inputs.folder / "cache.sqlite")}}))
    return ["teacher", "zero-shot-ner", config, "--data", inputs.folder / "gold.jsonl", "--output", run]


def lm_prepare(inputs: Inputs, run: Path) -> list:
    rng = random.Random(0)
    domain = [f"report {i} " + " ".join(rng.choice(FINANCE) for _ in range(30)) for i in range(12)]
    (inputs.folder / "domain.txt").write_text("\n\n".join(domain) + "\n")
    config = inputs.folder / "prep.yaml"
    config.write_text(yaml.safe_dump({
        "tokenizer": str(inputs.fixture("tokenizer_dir")), "block_size": 32, "eval_documents": 2,
        "sources": [{"name": "finance", "path": str(inputs.folder / "domain.txt"), "role": "domain"}],
        "cache_dir": str(inputs.folder / "cache"), "progress": False}))
    return ["lm", "prepare", config, "--output", run]


def lm_evaluate(inputs: Inputs, run: Path) -> list:
    (inputs.folder / "domain.txt").write_text(TEXT)
    model = causal_models(inputs)["base"]
    config = inputs.folder / "eval.yaml"
    config.write_text(yaml.safe_dump({
        "models": [{"name": "tiny", "path": str(model)}], "device": "cpu", "progress": False,
        "perplexity": {"texts": {"domain": str(inputs.folder / "domain.txt")}, "max_length": 32}}))
    return ["lm", "evaluate", config, "--output", run]


COMMANDS = {
    "fractal train": fractal_train,
    "fractal evaluate": fractal_evaluate,
    "merge": merge_config,
    "merge chat-vector": merge_chat_vector,
    "merge search": merge_search,
    "synth generate": synth_generate,
    "synth review import": synth_review_import,
    "teacher zero-shot-ner": teacher_zero_shot,
    "lm prepare": lm_prepare,
    "lm evaluate": lm_evaluate,
}


@pytest.fixture
def inputs(tmp_path, request):
    with ExitStack() as servers:
        yield Inputs(tmp_path / "inputs", request, servers)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_leaves_a_complete_run_directory(command, inputs, tmp_path, run_cli):
    inputs.folder.mkdir()
    run = tmp_path / "run"
    code, _, err = run_cli(*COMMANDS[command](inputs, run))
    assert code == 0, err
    for name in RUN_FILES:
        assert (run / name).is_file() and (run / name).stat().st_size > 0, f"{command}: {name} missing or empty"
    assert isinstance(json.loads((run / "metrics.json").read_text()), dict)
    assert isinstance(yaml.safe_load((run / "config.yaml").read_text()), dict)
    assert "adaptlab " in (run / "log.txt").read_text()
    assert not list(tmp_path.glob(".run.partial-*"))


def test_a_merge_run_is_the_model_directory_too(inputs, tmp_path, run_cli):
    """The merged model stays where users load it from: ``--output`` holds the weights and the run files."""
    from transformers import AutoModelForCausalLM

    inputs.folder.mkdir()
    run = tmp_path / "run"
    assert run_cli(*merge_chat_vector(inputs, run))[0] == 0
    AutoModelForCausalLM.from_pretrained(run)
    report = json.loads((run / "merge_report.json").read_text())
    assert json.loads((run / "metrics.json").read_text()) == report and report["config"]["name"] == "chat-vector"
    assert yaml.safe_load((run / "config.yaml").read_text())["models"][1]["weight"] == 0.5
    assert f"merged {report['tensors']} tensors (task_arithmetic)" in (run / "log.txt").read_text()


def fail_inside(monkeypatch, target: str, error: BaseException) -> None:
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(target, failing)


@pytest.mark.parametrize(("command", "target", "error", "exit_code"), [
    ("fractal train", "adaptlab.recipes.fractal.fit", RuntimeError("boom"), 1),
    ("merge", "adaptlab.merge.files.write_side_files", OSError(28, "No space left on device"), 2),
    ("lm evaluate", "adaptlab.recipes.lm_evaluate.score_model", KeyboardInterrupt(), 130),
])
def test_a_command_failing_inside_its_run_leaves_no_run_directory(command, target, error, exit_code, inputs,
                                                                  tmp_path, run_cli, monkeypatch):
    inputs.folder.mkdir()
    args = COMMANDS[command](inputs, tmp_path / "run")
    fail_inside(monkeypatch, target, error)
    code, _, err = run_cli(*args)
    assert code == exit_code, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # no run directory, no partial one


def test_a_command_that_does_not_finish_its_run_is_a_bug(tmp_path):
    with pytest.raises(RuntimeError, match="ended without writing the results"), unfinished_runs_removed():
        with open_run(tmp_path / "run", "exp", run_config()):
            pass
    assert not (tmp_path / "run").exists()


def run_config(**values):
    from adaptlab.config import StrictModel

    class ExpConfig(StrictModel):
        lr: float = 0.1

    return ExpConfig(**values)


def test_an_existing_run_is_continued_with_its_own_config(tmp_path):
    with open_run(tmp_path / "run", "exp", run_config(lr=0.1)) as run:
        logging.getLogger("adaptlab").info("first part")
        run.finish({"step": 1}, "exp", [])
    with open_run(None, "exp", run_config(lr=0.5), existing=RunDir(run.path)) as again:
        logging.getLogger("adaptlab").info("second part")
        again.finish({"step": 2}, "exp", [])
    assert again.path == run.path == tmp_path / "run"
    assert yaml.safe_load((run.path / "config.yaml").read_text()) == {"lr": 0.1}
    assert json.loads((run.path / "metrics.json").read_text()) == {"step": 2}
    log = (run.path / "log.txt").read_text()
    assert log.index("first part") < log.index("second part")


def test_an_atomic_run_appears_only_when_finished(tmp_path):
    target = tmp_path / "model"
    with open_run(target, "exp", run_config(), atomic=True) as run:
        assert run.path == partial_dir(target) and not target.exists()
        (run.path / "weights.bin").write_bytes(b"\0" * 8)
        run.finish({"ok": True}, "exp", [])
        assert not target.exists()
    logging.getLogger("adaptlab").info("after the rename")
    assert run.path == target and not partial_dir(target).exists()
    assert {p.name for p in target.iterdir()} == {"weights.bin", *RUN_FILES}
    assert "after the rename" in (target / "log.txt").read_text()


def test_an_atomic_run_that_fails_leaves_nothing_even_outside_the_cli(tmp_path):
    with pytest.raises(ValueError, match="bad input"):
        with open_run(tmp_path / "model", "exp", run_config(), atomic=True) as run:
            (run.path / "weights.bin").write_bytes(b"\0" * 8)
            raise ValueError("bad input")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="explicit output"):
        with open_run(None, "exp", run_config(), atomic=True):
            pass
