"""The docs stay true: the config reference is regenerated and compared, every documented key has a description,
the commands the pages show exist with the options they use, the Python API page's example runs, and
``import adaptlab`` stays light (no torch) while exporting the recipes."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import pytest

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
    """Each ``load_config(Model, ...)`` in the CLI names a model with a section of its own."""
    documented = {spec.split(":")[1] for _, spec in config_reference.COMMANDS}
    loaded = set()
    for module in (ROOT / "src" / "adaptlab" / "cli").glob("*.py"):
        loaded |= set(re.findall(r"load_config\(\s*(?:\w+\.)?(\w+)", module.read_text(encoding="utf-8")))
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
