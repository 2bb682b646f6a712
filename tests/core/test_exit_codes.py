"""Exit codes and messages of the CLI: 0 done, 2 wrong input, 1 internal error, 130 / 143 interrupted; never a
traceback without --debug; failed commands leave no run directory they created. Command-line mistakes and every
command's --help: test_cli_usage.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from adaptlab import interrupts, runs
from adaptlab.cli import main


@pytest.fixture
def failing_command(monkeypatch):
    """``adaptlab lm prepare CONFIG --output DIR`` made to create its run directory, then call ``failure``."""
    import adaptlab.config
    from adaptlab.recipes import lm_prepare

    def install(failure, keep: str | None = None):
        def prepare(cfg):
            run = runs.create_run_dir(cfg["output"], "prepare")
            (run.path / "partial.bin").write_bytes(b"x")
            if keep:
                runs.keep_on_failure(run, keep)
            failure()
            return run, {"splits": {}}

        monkeypatch.setattr(adaptlab.config, "load_config", lambda cls, config, overrides, extra: extra)
        monkeypatch.setattr(lm_prepare, "prepare", prepare)
        Path("c.yaml").write_text("{}\n")  # the CONFIG argument must name a file (tests run in tmp_path)
    return install


def raise_(exc):
    def fail():
        raise exc
    return fail


def test_an_internal_error_is_one_line_with_exit_1(failing_command, run_cli, tmp_path):
    failing_command(raise_(ZeroDivisionError("division by zero")))
    code, out, err = run_cli("lm", "prepare", "c.yaml", "--output", tmp_path / "out")
    assert code == 1
    message = " ".join(err.split())
    assert "internal error (ZeroDivisionError: division by zero)" in message and "--debug" in message
    assert "Traceback" not in out + err
    assert not (tmp_path / "out").exists() and f"removed the unfinished run directory {tmp_path / 'out'}" in message


def test_debug_shows_the_internal_error(failing_command, tmp_path):
    failing_command(raise_(ZeroDivisionError("division by zero")))
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "lm", "prepare", "c.yaml", "--output", str(tmp_path / "out")])


def test_a_user_error_after_the_run_directory_exists_removes_it(failing_command, run_cli, tmp_path):
    from adaptlab.errors import ModelError

    failing_command(raise_(ModelError("model.safetensors is truncated")))
    code, _, err = run_cli("lm", "prepare", "c.yaml", "--output", tmp_path / "out")
    assert code == 2 and "model.safetensors is truncated" in err
    assert not (tmp_path / "out").exists()
    failing_command(lambda: None)  # the same command, now succeeding, can use the same output
    code, _, err = run_cli("lm", "prepare", "c.yaml", "--output", tmp_path / "out")
    assert code == 0, err


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_the_command_with_128_plus_its_number(signum, code, failing_command, run_cli, tmp_path):
    failing_command(lambda: os.kill(os.getpid(), signum))
    exit_code, out, err = run_cli("lm", "prepare", "c.yaml", "--output", tmp_path / "out")
    assert exit_code == code
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in out + err
    assert not (tmp_path / "out").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are the CLI's only while it runs


def test_a_kept_run_stays_with_its_note(failing_command, run_cli, tmp_path):
    failing_command(raise_(KeyboardInterrupt()), keep="run the same command again to continue")
    code, _, err = run_cli("lm", "prepare", "c.yaml", "--output", tmp_path / "out")
    assert code == 130
    assert (tmp_path / "out" / "partial.bin").exists()
    assert f"kept {tmp_path / 'out'}: run the same command again to continue" in " ".join(err.split())


def test_a_run_holding_a_kept_run_stays_too(tmp_path):
    with pytest.raises(KeyboardInterrupt), interrupts.handled_signals(), runs.unfinished_runs_removed():
        outer = runs.create_run_dir(tmp_path / "outer", "outer")
        inner = runs.create_run_dir(outer.path / "stage", "stage")
        runs.keep_on_failure(inner, "resume it")
        runs.create_run_dir(tmp_path / "other", "other")
        raise KeyboardInterrupt
    assert inner.path.is_dir() and not (tmp_path / "other").exists()
    assert interrupts.notes() == [
        f"removed the unfinished run directory {tmp_path / 'other'}; the same command can run again",
        f"kept {inner.path}: resume it"]


def test_stale_partial_directories_of_dead_processes_are_removed(tmp_path):
    output = tmp_path / "merged"
    dead = tmp_path / ".merged.partial-999999999"  # beyond any pid_max
    alive = tmp_path / f".merged.partial-{os.getppid()}"
    other = tmp_path / ".other.partial-999999999"
    for folder in (dead, alive, other):
        folder.mkdir()
    assert runs.partial_dir(output) == tmp_path / f".merged.partial-{os.getpid()}"
    assert not dead.exists() and alive.exists() and other.exists()


def test_an_output_below_a_regular_file_is_exit_2(tmp_path, run_cli):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "d.jsonl").write_text('{"text": "a b", "spans": []}\n')
    code, out, err = run_cli("data", "convert", tmp_path / "d.jsonl", "--output", tmp_path / "afile" / "out.jsonl")
    assert code == 2 and "Traceback" not in out + err
    assert f"{tmp_path / 'afile'} is a file, so nothing can be written below it" in " ".join(err.split())


def test_an_os_error_below_a_file_is_exit_2(failing_command, run_cli, tmp_path):
    (tmp_path / "afile").write_text("x")
    failing_command(lambda: (tmp_path / "afile").mkdir(parents=True))
    code, out, err = run_cli("lm", "prepare", "c.yaml", "--output", tmp_path / "out")
    assert code == 2 and "Traceback" not in out + err
    assert f"{tmp_path / 'afile'}: a file is there, so nothing can be written below it" in " ".join(err.split())


def test_a_full_disk_is_exit_2_and_removes_the_unfinished_run(failing_command, run_cli, tmp_path):
    import errno

    failing_command(raise_(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "data"))))
    code, out, err = run_cli("lm", "prepare", "c.yaml", "--output", tmp_path / "out")
    assert code == 2 and "Traceback" not in out + err
    assert "No space left on device" in err and not (tmp_path / "out").exists()
