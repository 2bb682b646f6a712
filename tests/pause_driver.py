"""Run ``adaptlab ARGS...`` in this process, paused at a chosen point, for fault tests that send real signals.

    python pause_driver.py MODULE:ATTR[.ATTR][@N] READY_FILE ARGS...

The N-th call (default 1) of the named function is replaced by a pause: the driver writes READY_FILE and
sleeps until a signal arrives, so the test knows exactly where the command was when it was stopped.
Tests use :func:`stopped_at`.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STARTUP_S = 240  # importing torch and transformers on a loaded 2-core machine


def stopped_at(target: str, args: list, workdir: Path, signum: int) -> tuple[int, str]:
    """Run ``adaptlab ARGS`` in a subprocess until it pauses at ``target``, send ``signum``; (exit code, stderr).

    The exit code is negative (``-signum``) when the signal killed the process without Python seeing it.
    """
    ready, log = workdir / ".paused", workdir / f"stderr-{target.replace(':', '-')}-{signum}.txt"
    ready.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, __file__, target, str(ready), *map(str, args)], cwd=workdir,
                                   env=env, stdout=subprocess.DEVNULL, stderr=stderr, preexec_fn=_default_signals)
        deadline = time.monotonic() + STARTUP_S
        while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not ready.exists():
            process.kill()
            process.wait()
            command = " ".join(map(str, args))
            raise AssertionError(f"adaptlab {command} never reached {target} (exit {process.returncode}):\n"
                                 f"{log.read_text(errors='replace')[-3000:]}")
        process.send_signal(signum)
        try:
            code = process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise TimeoutError(f"adaptlab {args[0]} ... did not exit within 120 s of signal {signum}") from None
    ready.unlink()
    return code, log.read_text(errors="replace")


def _default_signals() -> None:
    """In the child: SIGINT as in a terminal (a shell's background job starts with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pause_at(target: str, ready: Path) -> None:
    where, _, nth = target.partition("@")
    module_name, _, attributes = where.partition(":")
    *owners, name = attributes.split(".")
    owner = importlib.import_module(module_name)
    for attribute in owners:
        owner = getattr(owner, attribute)
    original = getattr(owner, name)
    calls = {"n": 0}

    def paused(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] < int(nth or 1):
            return original(*args, **kwargs)
        ready.write_text(where, encoding="utf-8")
        while True:
            time.sleep(0.05)

    setattr(owner, name, paused)


if __name__ == "__main__":
    pause_at(sys.argv[1], Path(sys.argv[2]))
    from adaptlab.cli import main

    sys.exit(main(sys.argv[3:]))
