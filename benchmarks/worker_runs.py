"""Shared by the benchmarks that measure each run in a fresh worker process and cache finished runs as JSONL
(``fewshot_cls.py``, ``ner_scarce.py``): a worker's numbers are its own (no warm caches, its own peak memory), and
an interrupted benchmark continues where it stopped.

``--jobs N`` runs N workers at once, each pinned to its own CPU core with one thread (``OMP_NUM_THREADS=1``,
``MKL_NUM_THREADS=1``), so that runs neither share nor fight over cores and their times compare; one job (the
default) runs the workers one after another with the machine's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

CORE_VARIABLE = "ADAPTLAB_BENCH_CORE"  # the CPU core a worker pins itself to (set by launch with --jobs > 1)


def read_cache(path: Path, key: Callable[[dict], tuple]) -> dict[tuple, dict]:
    """The finished runs in ``path`` (one JSON object per line), by ``key(run)``."""
    if not path.exists():
        return {}
    runs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {key(run): run for run in runs}


def launch(script: str | Path, spec: dict, core: int | None = None) -> dict:
    """Run ``script --worker SPEC`` in a fresh process (on CPU ``core`` alone, with one thread, when given); its last
    stdout line is the result (JSON), to which the worker's wall time including its start is added as
    ``process_seconds``."""
    started = time.perf_counter()
    one_core = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", CORE_VARIABLE: str(core)}
    env = None if core is None else {**os.environ, **one_core}
    done = subprocess.run([sys.executable, str(script), "--worker", json.dumps(spec)], capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"worker failed ({done.returncode}) for {spec}:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_seconds"] = round(time.perf_counter() - started, 2)
    return result


def usable_cores() -> list[int]:
    """The CPU cores this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def jobs_argument(value: str) -> int:
    """``--jobs``: at least 1 and at most the usable cores (one core per worker)."""
    jobs, cores = int(value), len(usable_cores())
    if not 1 <= jobs <= cores:
        raise argparse.ArgumentTypeError(f"{jobs} jobs: give 1 to {cores} (one core per worker)")
    return jobs


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """``--report`` (summarise the cached runs only), ``--jobs`` and the hidden ``--worker SPEC`` every such
    benchmark takes."""
    parser.add_argument("--report", action="store_true", help="run nothing: summarise the planned runs already cached")
    parser.add_argument("--jobs", type=jobs_argument, default=1, metavar="N",
                        help="workers at once, each pinned to its own core with one thread (default 1: one at a "
                             "time, all threads)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)


def served_worker(args: argparse.Namespace, worker: Callable[[dict], dict]) -> bool:
    """With ``--worker SPEC``: run that one spec in this process, print its result as the last stdout line (what
    :func:`launch` reads) and return True; otherwise False."""
    if not args.worker:
        return False
    if CORE_VARIABLE in os.environ:
        os.sched_setaffinity(0, {int(os.environ[CORE_VARIABLE])})
    print(json.dumps(worker(json.loads(args.worker))))
    return True


def run_missing(script: str | Path, todo: list[dict], cache: dict[tuple, dict], cache_path: Path,
                key: Callable[[dict], tuple], jobs: int = 1, group: Callable[[dict], Hashable] | None = None,
                describe: Callable[[dict], str] = str, result_line: Callable[[dict], str] = str,
                progress: Any = None) -> list[str]:
    """Run every spec of ``todo`` in a fresh worker of ``script``, ``jobs`` at once (module docstring), in order
    but never two specs of the same ``group(spec)`` at once (they share something a worker writes, such as a
    cached teacher). Each finished run is added to ``cache``, appended to ``cache_path`` and printed as
    ``result_line(result)`` as soon as it ends; a failed worker is printed and returned among the failures, and the
    other runs go on. ``progress`` (a rich Progress) gets a bar described by ``describe(spec)``.
    """
    pending, running, failures = list(todo), set(), []
    changed = threading.Condition()  # guards pending, running, failures, cache and the cache file
    cores = usable_cores()[:jobs] if jobs > 1 else [None]
    task = progress.add_task("runs", total=len(todo)) if progress is not None else None

    def say(line: str) -> None:
        if progress is not None:
            progress.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def take() -> dict | None:
        with changed:
            while True:
                ready = [spec for spec in pending if group is None or group(spec) not in running]
                if ready:
                    pending.remove(ready[0])
                    if group is not None:
                        running.add(group(ready[0]))
                    return ready[0]
                if not pending:
                    return None
                changed.wait()

    def work(core: int | None) -> None:
        while (spec := take()) is not None:
            if progress is not None:
                progress.update(task, description=describe(spec))
            try:
                result = launch(script, spec, core)
            except RuntimeError as err:
                with changed:
                    failures.append(str(err))
                say(str(err))
            else:
                with changed:
                    cache[key(result)] = result
                    with cache_path.open("a", encoding="utf-8") as fh:
                        fh.write(json.dumps(result) + "\n")
                say(result_line(result))
            with changed:
                if group is not None:
                    running.discard(group(spec))
                changed.notify_all()
            if progress is not None:
                progress.advance(task)

    workers = [threading.Thread(target=work, args=(core,), daemon=True) for core in cores]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return failures
