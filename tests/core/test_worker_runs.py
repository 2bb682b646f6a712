"""benchmarks/worker_runs.py: every missing run in a fresh worker, cached as it ends, ``--jobs`` workers at once each
pinned to its own core, never two runs of one group at once, and a failed worker reported without stopping the
others."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import worker_runs  # noqa: E402

WORKER = """
import argparse, json, os, sys, time
sys.path.insert(0, {benchmarks!r})
from worker_runs import add_run_arguments, served_worker

def worker(spec):
    if spec["name"] == "broken":
        raise SystemExit("this spec cannot run")
    started = time.time()
    time.sleep(spec.get("sleep", 0))
    return {{**spec, "cores": sorted(os.sched_getaffinity(0)), "threads": os.environ.get("OMP_NUM_THREADS"),
             "started": started, "ended": time.time()}}

parser = argparse.ArgumentParser()
add_run_arguments(parser)
served_worker(parser.parse_args(), worker)
"""


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "bench.py"
    path.write_text(textwrap.dedent(WORKER.format(benchmarks=str(Path(worker_runs.__file__).parent))))
    return path


def key(run: dict) -> tuple:
    return (run["name"],)


def test_each_run_is_cached_as_it_ends_and_a_failure_does_not_stop_the_rest(script, tmp_path):
    todo = [{"name": "one"}, {"name": "broken"}, {"name": "two"}]
    cache_path, cache = tmp_path / "runs.jsonl", {}
    failures = worker_runs.run_missing(script, todo, cache, cache_path, key, result_line=lambda r: r["name"])
    assert len(failures) == 1 and "worker failed" in failures[0] and "this spec cannot run" in failures[0]
    assert sorted(cache) == [("one",), ("two",)]
    assert worker_runs.read_cache(cache_path, key).keys() == cache.keys()
    # one job: the worker keeps this process's cores and threads
    assert all(run["threads"] == os.environ.get("OMP_NUM_THREADS") and run["process_seconds"] > 0
               and run["cores"] == worker_runs.usable_cores() for run in cache.values())


@pytest.mark.skipif(len(worker_runs.usable_cores()) < 2, reason="needs two CPU cores to run two workers at once")
def test_jobs_pin_each_worker_to_its_own_core_and_keep_a_group_apart(script, tmp_path):
    todo = [{"name": "a1", "group": "a", "sleep": 0.6}, {"name": "a2", "group": "a", "sleep": 0.1},
            {"name": "b1", "group": "b", "sleep": 0.1}]
    cache: dict = {}
    failures = worker_runs.run_missing(script, todo, cache, tmp_path / "runs.jsonl", key, jobs=2,
                                       group=lambda spec: spec["group"])
    assert failures == []
    runs = {name: cache[(name,)] for name in ("a1", "a2", "b1")}
    assert all(len(run["cores"]) == 1 and run["threads"] == "1" for run in runs.values())
    assert runs["a1"]["cores"] != runs["b1"]["cores"]  # a1 and b1 ran at once, on two cores
    assert runs["b1"]["started"] < runs["a1"]["ended"]
    assert runs["a2"]["started"] >= runs["a1"]["ended"]  # a2 waited for a1, its group's run


def test_jobs_are_checked_against_the_usable_cores():
    parser = argparse.ArgumentParser()
    worker_runs.add_run_arguments(parser)
    assert parser.parse_args(["--jobs", "1"]).jobs == 1
    too_many = str(len(worker_runs.usable_cores()) + 1)
    with pytest.raises(SystemExit):
        parser.parse_args(["--jobs", too_many])
    with pytest.raises(SystemExit):
        parser.parse_args(["--jobs", "0"])
