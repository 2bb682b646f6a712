"""``transformers serve`` as a child process on 127.0.0.1: a real OpenAI-compatible server for the
real-model benchmark (``benchmarks/teacher_real.py``) and tests.

The model directory is passed as ``FORCE_MODEL``, so the server loads that local directory at
start (nothing is looked up on a hub) and answers only requests whose ``model`` is that same path.
Readiness is ``GET /health`` returning 200; the server runs in its own session and is always
stopped (SIGTERM, then SIGKILL after ``stop_timeout_s``) when the ``with`` block ends, whatever
happened inside. Needs ``transformers[serving]`` (fastapi, uvicorn): ``make real-models``.

What it does with ``response_format`` (transformers 5.23): it accepts the field, logs
"Ignoring unsupported fields in the request: {'response_format'}" once, and decodes freely.
"""

from __future__ import annotations

import contextlib
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from adaptlab.teacher.base import TeacherError


@dataclass
class ServedModel:
    base_url: str
    process: subprocess.Popen
    command: str
    ready_seconds: float


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def transformers_serve(model_dir: str | Path, log_path: Path, env: dict[str, str] | None = None,
                       ready_timeout_s: float = 300, stop_timeout_s: float = 20) -> Iterator[ServedModel]:
    """Start ``transformers serve MODEL_DIR`` on a free port, yield once ready, always stop it."""
    executable = Path(sys.executable).with_name("transformers")
    if not executable.exists():
        raise TeacherError(f"{executable} not found: install transformers[serving] (make real-models)")
    port = free_port()
    command = [str(executable), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
               "--device", "cpu", "--log-level", "info"]
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        _wait_until_healthy(process, port, log_path, ready_timeout_s)
        yield ServedModel(f"http://127.0.0.1:{port}/v1", process, shlex.join(command),
                          round(time.perf_counter() - started, 1))
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_healthy(process: subprocess.Popen, port: int, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise TeacherError(f"transformers serve exited with code {process.returncode} before it was ready; "
                               f"its log {log_path} ends: {log_path.read_text()[-1500:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        if time.monotonic() > deadline:
            raise TeacherError(f"transformers serve was not ready after {timeout_s:.0f} s; see {log_path}")
        time.sleep(1)
