"""The docs stay true: the config reference is regenerated and compared, every documented key has a description,
the commands the pages show exist with the options they use, the Python API page's example runs, and
``import adaptlab`` stays light (no torch) while exporting the recipes."""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer

from adaptlab import config_reference

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "config-reference.md"


# ---- the config reference --------------------------------------------------------------------------------------

def test_the_committed_config_reference_is_current():
    expected = config_reference.render()
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.is_file() else ""
    if committed != expected:
        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), expected.splitlines(True),
                                                 "committed", "generated", n=0))[:40])
        pytest.fail(f"docs/config-reference.md is stale; regenerate it with `{config_reference.REGENERATE}`\n{diff}")


def test_every_documented_key_has_a_description():
    missing = config_reference.missing_descriptions()
    assert not missing, ("these config fields have no description= (the reference would show a blank cell): "
                         + ", ".join(missing))


def test_every_command_that_loads_a_config_is_in_the_reference():
    """Each ``load_config(Model, ...)`` or ``train_student(Model, ...)`` (which loads it) in the CLI names a model
    with a section of its own."""
    documented = {spec.split(":")[1] for _, spec in config_reference.COMMANDS}
    loaded = set()
    for module in (ROOT / "src" / "adaptlab" / "cli").glob("*.py"):
        calls = re.findall(r"(?:load_config|train_student)\(\s*(?:\w+\.)?(\w+)", module.read_text(encoding="utf-8"))
        loaded |= {name for name in calls if name != "config_type"}  # common.train_student's own parameter
    assert loaded, "the CLI no longer calls load_config: update this test"
    assert loaded <= documented, f"config models without a section in the reference: {sorted(loaded - documented)}"


def test_nested_keys_are_dotted_with_type_default_and_bounds():
    text = config_reference.render()
    rows: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("| `"):
            rows.setdefault(line.split(" | ")[0].strip("| `"), line)  # the first table with the key: TrainerSettings
    assert rows["training.learning_rate"].startswith("| `training.learning_rate` | float (> 0) | `5e-05` | ")
    assert "| int (≥ 1) | `16` |" in rows["strategy.peft.r"]
    assert "**required**" in rows["models[].model"] and "length ≥ 1" in rows["models[].model"]
    assert "tasks.<name>.train" in rows and "schema.relations[].head" in rows  # dict and list sections; an alias
    assert rows["teacher.cache_path"].count("adaptlab's cache folder") == 1  # a factory's docstring, not a path
    # a section shared by several commands is linked from each of them, not repeated
    assert "| `training` | [EncoderTrainerSettings](#training-encodertrainersettings) |" in text
    assert sum(line.startswith("| `teacher.model`") for line in text.splitlines()) == 1
    # prose is Markdown: `runs/<time>-<name>` outside code would be read as HTML tags and vanish
    assert "default runs/&lt;time>-&lt;name> |" in rows["output"] and "`tasks.<name>.train`" in text


def test_a_subclass_of_trainer_settings_lists_only_what_it_changes():
    text = config_reference.render()
    section = text.split("## `training:` ClsTrainerSettings")[1].split("\n## ")[0]
    keys = re.findall(r"^\| `([^`]+)`", section, flags=re.M)
    assert keys == ["training.num_train_epochs", "training.early_stopping_patience"]
    assert "Every key of [EncoderTrainerSettings](#training-encodertrainersettings)" in section


def test_strategy_sections_come_from_the_registry(monkeypatch):
    """A strategy registered later (as ``domain`` will be) gets its section without an edit here."""
    from adaptlab.config import StrictModel
    from adaptlab.tuning import strategies

    class ExampleStrategyConfig(StrictModel):
        """An example strategy."""

        strength: float = 0.5

    assert [s.title for s in config_reference.strategy_sections()] == [
        f"`strategy.{name}:`" for name in strategies.REGISTRY]
    monkeypatch.setitem(strategies.REGISTRY, "example", (ExampleStrategyConfig, object))
    text = config_reference.render()
    assert "## `strategy.example:`" in text and "| `strategy.example.strength` | float | `0.5` |" in text


def test_the_reference_does_not_depend_on_the_environment(monkeypatch, tmp_path):
    first = config_reference.render()
    monkeypatch.setenv("ADAPTLAB_CACHE_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(tmp_path)
    assert config_reference.render() == first
    assert str(tmp_path) not in first and str(Path.home()) not in first


def test_config_reference_command_writes_and_prints(tmp_path, run_cli):
    target = tmp_path / "ref.md"
    target.write_text("old", encoding="utf-8")
    code, out, err = run_cli("config", "reference", "--output", target)
    assert code == 0, err
    assert target.read_text(encoding="utf-8") == config_reference.render()  # a regenerated file is replaced
    code, out, _ = run_cli("config", "reference")
    assert code == 0 and out == config_reference.render()


def test_config_reference_to_a_folder_is_one_line_and_exit_2(tmp_path, run_cli):
    code, out, err = run_cli("config", "reference", "--output", tmp_path)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert f"--output {tmp_path} is a folder" in err
    assert list(tmp_path.iterdir()) == []


# ---- the Python API ----------------------------------------------------------------------------------------------

def python_blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.M | re.S)


def test_the_python_api_example_runs(tmp_path, monkeypatch, tiny_bert_dir):
    """The page's code as it is, on a tiny random encoder standing in for the packaged MiniLM (speed only)."""
    from adaptlab.ie import models

    blocks = python_blocks(DOCS / "python-api.md")
    assert len(blocks) == 1
    monkeypatch.setattr(models, "default_student_path", lambda: tiny_bert_dir)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "python_api_example"}
    exec(compile(blocks[0], "docs/python-api.md", "exec"), namespace)
    soup = namespace["soup"].output_dir
    assert (soup / "merge_report.json").is_file() and (soup / "model.safetensors").is_file()
    assert len(namespace["students"]) == 2 and all(Path(s, "config.json").is_file() for s in namespace["students"])
    assert namespace["report"]["strict"]["micro"]["f1"] >= 0


def test_import_adaptlab_loads_neither_torch_nor_transformers():
    code = ("import sys, adaptlab; heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'peft') "
            "if m in sys.modules); print(','.join(heavy))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.stdout.strip() == "", f"import adaptlab imported {result.stdout.strip()}"


def test_the_top_level_exports_the_recipes_and_every_command_config():
    import adaptlab
    from adaptlab.recipes import cls, ner

    assert adaptlab.recipes.ner is ner and adaptlab.recipes.cls.train is cls.train
    for _, spec in config_reference.COMMANDS:
        name = spec.split(":")[1]
        assert getattr(adaptlab, name) is config_reference.load(spec), name
        assert name in dir(adaptlab) and name in adaptlab.__all__
    assert adaptlab.merge_run.__module__ == "adaptlab.merge.engine"
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        adaptlab.nonesuch  # noqa: B018
    with pytest.raises(AttributeError, match="'adaptlab.recipes' has no attribute 'nonesuch'"):
        adaptlab.recipes.nonesuch  # noqa: B018


# ---- the pages: commands that exist, keys that exist, links that resolve -----------------------------------------

PAGES = sorted(p for p in DOCS.glob("*.md") if p != REFERENCE) + [DOCS.parent / "README.md"]  # README's tour too
GLOBAL_FLAGS = {"-q", "--quiet", "-v", "--verbose", "--debug", "--version", "--help"}


def shell_commands(page: Path) -> list[list[str]]:
    """The ``adaptlab ...`` lines of a page's bash blocks, as words (continuations joined, comments and the
    optional-part brackets ``[...]`` of the usage notation dropped)."""
    commands = []
    for block in re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.M | re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = [w.strip("[]") for w in shlex.split(line, comments=True)]
            if words and words[0] == "adaptlab":
                commands.append([w for w in words[1:] if w and w != "..."])
    return commands


def resolve_command(words: list[str]) -> tuple[list[str], object, list[str]]:
    """(command path, click command, remaining words) for ``adaptlab WORDS``, as the CLI parses them."""
    from adaptlab.cli import _register, app
    from adaptlab.cli.common import RunByDefault

    _register()
    command, path = typer.main.get_command(app), []
    words = [w for w in words if w not in GLOBAL_FLAGS]
    while hasattr(command, "commands"):
        if words and words[0] in command.commands:
            path.append(words.pop(0))
        elif isinstance(command, RunByDefault) and words and not words[0].startswith("-"):
            path.append("run")
        else:
            raise AssertionError(f"'adaptlab {' '.join(path + words[:1])}' is not a command")
        command = command.commands[path[-1]]
    return path, command, words


def config_keys(path: list[str]) -> dict[str, object] | None:
    """Every dotted key the command's config accepts, with its field; None for a command without a config model."""
    spec = dict(config_reference.COMMANDS).get("adaptlab " + " ".join(path))
    if spec is None:
        return None
    return dict(config_reference.walk_fields(config_reference.load(spec)))


def known_key(key: str, keys: dict[str, object]) -> bool:
    """A documented key, or an entry of a free mapping (``training.trainer_args.optim``, ``parameters.t``)."""
    parts = key.split(".")
    prefixes = (keys.get(".".join(parts[:i])) for i in range(1, len(parts)))
    return key in keys or any(f is not None and typing.get_origin(f.annotation) is dict for f in prefixes)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_on_the_page_exists_with_its_options_and_keys(page):
    problems = []
    for words in shell_commands(page):
        try:
            path, command, rest = resolve_command(words)
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        options = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | GLOBAL_FLAGS
        keys = config_keys(path)
        for word in rest:
            if word.startswith("-") and not re.fullmatch(r"-\d.*", word) and word.split("=")[0] not in options:
                problems.append(f"adaptlab {' '.join(path)} has no option {word.split('=')[0]}")
            elif keys is not None and re.fullmatch(r"[A-Za-z_][\w.]*=.*", word) and \
                    not known_key(word.split("=")[0], keys):
                problems.append(f"adaptlab {' '.join(path)}: unknown config key {word.split('=')[0]!r}")
    assert not problems, f"{page.name}: " + "; ".join(problems)


@pytest.mark.parametrize("page", [*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, fragment = target.partition("#")
        linked = (page.parent / file).resolve() if file else page
        if not linked.exists():
            broken.append(target)
        elif fragment and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", linked.read_text(encoding="utf-8"), flags=re.M)
            if fragment not in {config_reference.anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


def test_a_wrong_command_option_or_key_on_a_page_is_caught(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nadaptlab ner train --train a.jsonl training.lr=1 --nope\nadaptlab ner fly\n"
                    "adaptlab merge merge_ties.yaml --output m  # comment\n```\n", encoding="utf-8")
    commands = shell_commands(page)
    path, command, rest = resolve_command(commands[0])
    assert path == ["ner", "train"] and "training.lr=1" in rest
    assert not known_key("training.lr", config_keys(path))
    assert known_key("training.trainer_args.optim", config_keys(path))
    with pytest.raises(AssertionError, match="'adaptlab ner fly' is not a command"):
        resolve_command(commands[1])
    assert resolve_command(commands[2])[0] == ["merge", "run"]
