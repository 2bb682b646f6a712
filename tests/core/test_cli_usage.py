"""The command line itself: every command's --help, one shape for every command, usage mistakes as one line and a
hint with exit 2 (never a traceback), the forms that changed, --version, -q / -v, shell completion, and
``adaptlab config list | show | cp``."""

from __future__ import annotations

import logging
from importlib import metadata

import pytest
import typer
import yaml

from adaptlab import example_configs, runs
from adaptlab.cli import app, main


def leaf_commands() -> dict[tuple[str, ...], object]:
    """Every leaf command of the CLI by its words (``("ner", "train")``, ``("extract",)``, ...)."""
    from adaptlab.cli import _register

    _register()
    found = {}

    def walk(command, prefix):
        children = getattr(command, "commands", None)
        if not children:
            found[prefix] = command
        for name, child in (children or {}).items():
            walk(child, (*prefix, name))

    walk(typer.main.get_command(app), ())
    return found


COMMANDS = leaf_commands()


def usage_error(code: int, out: str, err: str) -> list[str]:
    """The lines of a usage error, after checking its shape: exit 2, one error line and one hint, no traceback."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in out + err and out == ""
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: '"), err
    return lines


@pytest.fixture(autouse=True)
def _console_back_to_default(monkeypatch):
    """-q sets TQDM_DISABLE and -v debug logging for the process; put both back after each test."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    yield
    runs.configure_console()


def test_the_walk_finds_every_group():
    assert {path[0] for path in COMMANDS} >= {"config", "data", "ner", "re", "cls", "synth", "teacher", "distill",
                                              "merge", "fractal", "lm", "model", "domain-instruct", "extract", "demo"}
    assert len(COMMANDS) > 35


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_help_renders(path, run_cli):
    code, out, err = run_cli(*path, "--help")
    assert code == 0, err
    assert f"Usage: adaptlab {' '.join(path)}" in out and "Traceback" not in out + err


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_the_one_shape(path):
    """[CONFIG] first and optional, key=value overrides after it, --output/-o for what it writes, no old names."""
    params = COMMANDS[path].params
    arguments = [p.name for p in params if p.param_type_name == "argument" and not getattr(p, "hidden", False)]
    options = {opt for p in params if p.param_type_name == "option" for opt in p.opts}
    if "config" in arguments:
        config = next(p for p in params if p.name == "config")
        assert arguments == ["config", "overrides"] and not config.required
    for old in ("--config", "--out"):
        assert old not in options
    output = [p for p in params if p.name == "output"]
    if output:
        assert output[0].opts == ["--output", "-o"]
    assert not {"-q", "-v", "--quiet", "--verbose", "--debug"} & options  # the global flags are the root's


def test_the_groups_are_registered_once_however_often_main_runs(run_cli):
    groups = len(app.registered_groups)
    for _ in range(3):
        run_cli("config", "--help")
    assert len(app.registered_groups) == groups  # each call used to add them all again, and slowed the next


def test_help_shows_brackets_literally(run_cli):
    code, out, _ = run_cli("re", "predict", "--help")
    assert code == 0 and "[E1]head[/E1]" in out


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_an_unknown_option_is_one_line_and_a_hint(path, run_cli):
    error, hint = usage_error(*run_cli(*path, "--no-such-option"))
    assert error == "error: No such option: --no-such-option"
    assert hint == f"hint: 'adaptlab {' '.join(path)} --help' shows the arguments and options"


@pytest.mark.parametrize("args, message", [
    (("--bogus",), "No such option: --bogus"),
    (("nosuchgroup",), "No such command 'nosuchgroup'."),
    (("ner", "trian"), "No such command 'trian'. Did you mean 'train'?"),
    (("ner", "train", "--epoch", "1"), "Possible options: --epochs"),
    (("ner", "train", "--epochs", "abc"), "Invalid value for '--epochs'"),
    (("re", "predict", "--text", "x"), "Missing option '--model'"),
    (("config", "cp", "ner"), "Missing argument 'dest'"),
    (("data", "inspect"), "Missing argument 'path'"),
    (("-q", "-v", "config", "list"), "-q/--quiet and -v/--verbose exclude each other"),
])
def test_command_line_mistakes_are_one_line_and_a_hint(args, message, run_cli):
    error, _ = usage_error(*run_cli(*args))
    assert message in error


@pytest.mark.parametrize("args, new_form", [
    (("ner", "train", "--config", "c.yaml"),
     "--config is gone; the config is the first argument: adaptlab ner train CONFIG [key=value ...]"),
    (("fractal", "train", "--config", "c.yaml"), "the config is the first argument: adaptlab fractal train CONFIG"),
    (("synth", "review", "export", "runs/gen", "--out", "review"),
     "--out is now --output: adaptlab synth review export ... --output PATH"),
    (("data", "convert", "in.conll", "out.jsonl"),
     "the output file is an option now: adaptlab data convert SOURCE --output out.jsonl"),
    (("cls", "predict", "--model", "run", "a text"),
     'texts are given with --text now: adaptlab cls predict --model MODEL --text "..."'),
])
def test_a_form_that_changed_names_the_new_one(args, new_form, run_cli):
    error, _ = usage_error(*run_cli(*args))
    assert new_form in error


def test_an_option_that_never_existed_gets_no_new_form(run_cli):
    error, _ = usage_error(*run_cli("data", "inspect", "x.txt", "--config", "c.yaml"))
    assert error == "error: No such option: --config"


@pytest.mark.parametrize("args, message", [
    (("ner", "train", "=3"), "override '=3' is not key=value"),
    (("cls", "train", "a=1"), "unknown key 'a'"),
    (("ner", "train", "training.seed=1", "my.yaml"), "my.yaml is not key=value; a config file goes first"),
    (("lm", "train", "training.seed"), "config file training.seed not found; give a YAML file, the name of a "
                                       "shipped config (adaptlab config list) or key=value overrides"),
])
def test_a_bad_key_value_is_one_line_exit_2(args, message, run_cli):
    code, out, err = run_cli(*args)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in out + err
    assert len(err.strip().splitlines()) == 1


def test_a_group_without_a_command_shows_its_help_with_exit_2(run_cli):
    code, out, err = run_cli("lm")
    assert code == 2 and "Usage: adaptlab lm" in err and "export-task" in err and "Traceback" not in out + err


def test_version_prints_the_package_version(run_cli):
    code, out, err = run_cli("--version")
    assert code == 0 and err == ""
    assert out == f"adaptlab {metadata.version('adaptlab')}\n"


def test_global_flags_work_anywhere_on_the_line(run_cli, capsys):
    assert run_cli("config", "list", "-v")[0] == 0
    runs.get_logger().debug("a debug record")
    assert "debug: a debug record" in capsys.readouterr().err


def test_quiet_turns_off_bars_and_keeps_warnings(run_cli, capsys):
    assert run_cli("config", "list", "--quiet")[0] == 0
    assert not runs.progress_enabled(True) and runs.progress_bar(True).disable
    log = runs.get_logger()
    log.info("an info record")
    log.warning("a warning")
    assert capsys.readouterr().err == "warning: a warning\n"


def test_by_default_warnings_reach_the_console_and_info_only_the_log(run_cli, capsys):
    assert run_cli("config", "list")[0] == 0
    assert runs.progress_enabled(True) and runs.get_logger().getEffectiveLevel() == logging.INFO
    runs.get_logger().info("an info record")
    runs.get_logger().warning("a warning")
    assert capsys.readouterr().err == "warning: a warning\n"


def test_shell_completion_is_offered_and_completes(run_cli, monkeypatch, capsys):
    # typer takes the shell from the parent process (under `make` that is sh, which it cannot complete)
    monkeypatch.setattr("typer.completion._get_shell_name", lambda: "bash")
    code, out, _ = run_cli("--show-completion")
    assert code == 0 and "_ADAPTLAB_COMPLETE=complete_bash" in out
    monkeypatch.setenv("_ADAPTLAB_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "adaptlab config cp accelerate/d")
    monkeypatch.setenv("COMP_CWORD", "3")
    assert main([]) == 0
    assert capsys.readouterr().out.split() == ["accelerate/ddp", "accelerate/deepspeed", "accelerate/deepspeed_zero2"]


def test_config_list_and_show(run_cli):
    code, out, _ = run_cli("config", "list")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()[:-1]]
    assert listed == example_configs.names() and {"ner", "lm_sft", "accelerate", "accelerate/ddp"} <= set(listed)
    code, out, _ = run_cli("config", "show", "ner")
    assert code == 0 and out == example_configs.path("ner").read_text(encoding="utf-8")
    assert yaml.safe_load(out)["model"] == "minilm"


def test_config_cp_copies_and_never_overwrites(run_cli, tmp_path):
    code, out, _ = run_cli("config", "cp", "lm_sft", "my.yaml")
    assert code == 0 and "copied lm_sft to my.yaml" in out
    assert (tmp_path / "my.yaml").read_bytes() == example_configs.path("lm_sft").read_bytes()
    (tmp_path / "my.yaml").write_text("edited: true\n")
    code, out, err = run_cli("config", "cp", "ner", "my.yaml")
    assert code == 2 and "destination my.yaml already exists" in err and "Traceback" not in out + err
    assert (tmp_path / "my.yaml").read_text() == "edited: true\n"
    (tmp_path / "into").mkdir()
    assert run_cli("config", "cp", "re", "into")[0] == 0 and (tmp_path / "into" / "re.yaml").is_file()
    assert run_cli("config", "cp", "accelerate", ".")[0] == 0
    assert sorted(p.name for p in (tmp_path / "accelerate").iterdir()) == [
        "ddp.yaml", "deepspeed.yaml", "deepspeed_zero2.json", "fsdp.yaml"]
    assert run_cli("config", "cp", "accelerate", ".")[0] == 2
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_config_cp_of_an_unknown_name_lists_the_known_ones(run_cli, tmp_path):
    code, out, err = run_cli("config", "cp", "ner_bio", "x.yaml")
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in out + err and len(err.strip().splitlines()) == 1
    assert message.startswith("error: no shipped config named 'ner_bio' (did you mean 'ner'?); the shipped configs "
                              "are: accelerate, accelerate/ddp,")
    assert all(name in message for name in example_configs.names())
    assert list(tmp_path.iterdir()) == []


def test_a_shipped_config_runs_by_its_name(run_cli, tmp_path):
    """``ner train ner`` reads the shipped ner.yaml: its train file (data/biospecies.train.jsonl) is looked for."""
    code, out, err = run_cli("ner", "train", "ner", "--output", tmp_path / "run")
    assert code == 2 and "data/biospecies.train.jsonl" in " ".join(err.split()) and "Traceback" not in out + err
    assert not (tmp_path / "run").exists()
