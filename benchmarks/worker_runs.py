"""Shared by the benchmarks that measure each run in a fresh worker process and cache finished runs as JSONL
(``fewshot_cls.py``, ``ner_scarce.py``): a worker's numbers are its own (no warm caches, its own peak memory), and
an interrupted benchmark continues where it stopped."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def read_cache(path: Path, key: Callable[[dict], tuple]) -> dict[tuple, dict]:
    """The finished runs in ``path`` (one JSON object per line), by ``key(run)``."""
    if not path.exists():
        return {}
    runs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {key(run): run for run in runs}


def launch(script: str | Path, spec: dict) -> dict:
    """Run ``script --worker SPEC`` in a fresh process; its last stdout line is the result (JSON), to which the
    worker's wall time including its start is added as ``process_seconds``."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), "--worker", json.dumps(spec)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({done.returncode}) for {spec}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return result


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--report`` (summarise the cached runs only) and the hidden ``--worker SPEC`` every such benchmark takes."""
    parser.add_argument("--report", action="store_true", help="run nothing: summarise the planned runs already cached")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def served_worker(args: argparse.Namespace, worker: Callable[[dict], dict]) -> bool:
    """With ``--worker SPEC``: run that one spec in this process, print its result as the last stdout line (what
    :func:`launch` reads) and return True; otherwise False."""
    if not args.worker:
        return False
    print(json.dumps(worker(json.loads(args.worker))))
    return True
