"""Teacher runner throughput, crash recovery and malformed answers, against a local OpenAI-compatible stub.

(a) **Throughput.** The real ``openai`` client goes through :class:`TeacherRunner` (cache on, fresh
SQLite file, distinct requests so nothing is a hit) to a :class:`StubServer` that answers after
``L`` seconds. With ``c`` requests in flight the ideal rate is ``c / L`` requests/s;
``ratio = measured / (c / L)``, target >= 0.9, and the stub's ``max_in_flight`` must equal ``c``.
The stub runs in its own (spawned) process, as a real server would, so its threads do not share
the client's GIL. ``client CPU ms/req`` is this process's CPU time / N; one event loop cannot go
faster than ``1000 / it`` requests/s ("CPU ceiling"), whatever ``c / L`` says. The default
``L = 1 s`` is on the short side of real LLM answers; on a 2-core machine the openai client costs
3-6 ms of CPU per request, so with ``L = 0.2 s`` and ``c = 64`` (ideal 320/s) the client itself is
the limit (about 0.58 of ideal, measured), not the runner.

(b) **Crash recovery.** ``adaptlab synth generate`` runs as a subprocess against an in-process stub
with latency, random 429s and 500s, and a responder that truncates the answer of the requests whose
messages hash into the first ``malformed_rate`` of sha256 space (deterministic, unlike the stub's
``p_malformed``). Run 1 (reference) is uninterrupted. Run 2 (fresh cache, new stub) is SIGKILLed once
the stub has answered half of the reference's requests. Run 3 reruns run 2's command (same cache,
same stub, new output dir). Targets: run 3's records.jsonl and rejects.jsonl have the reference's
sha256; no answer that reached run 2's cache is sent again (only requests the stub answered while
the client was being killed may be); crash + resume answered exactly the reference's requests.

(c) **Malformed answers.** In the reference run "unparseable answer" rejects = truncated answers,
the exit code is 0, and every 429 / 500 the stub sent was retried (metrics.json runner.retry_reasons).

    python benchmarks/teacher_throughput.py [--latency 1.0] [--concurrency 4,16,64] [--per-group 40]

Prints tables, writes benchmarks/results/teacher_throughput.json, exits 1 if any target fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import openai
import yaml
from rich.console import Console
from rich.table import Table

from adaptlab.synth.scripted import scripted_answer
from adaptlab.teacher.base import Message, Sampling, TeacherRequest
from adaptlab.teacher.cache import ResponseCache
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.registry import build_teacher
from adaptlab.teacher.runner import TeacherRunner
from adaptlab.teacher.stub_server import StubServer, body_fingerprint, corrupt_content

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "teacher_throughput.json"
EXAMPLE_CONFIG = ROOT / "src" / "adaptlab" / "resources" / "configs" / "synth_biospecies.yaml"
KEY_ENV = "ADAPTLAB_BENCH_UNSET_KEY"  # kept unset: a 127.0.0.1 server gets the placeholder key
MODEL = "adaptlab-bench-teacher"  # the stubs in (b) answer no other model, so stray clients are not counted
TARGET_RATIO = 0.9
console = Console(width=140)


def serve_stub(conn: Any, latency_s: float) -> None:
    """Child process: run a stub, send its URL, wait for "stop", send back its counters."""
    with StubServer(lambda body: '{"ok": true}', latency_s=latency_s) as stub:
        conn.send(stub.base_url)
        conn.recv()
    stats = stub.stats.snapshot()
    conn.send({"received": stats["received"], "by_status": stats["by_status"], "max_in_flight": stats["max_in_flight"]})


async def run_batch(cfg: TeacherConfig, cache: ResponseCache, requests: list[TeacherRequest]):
    teacher = build_teacher(cfg)
    runner = TeacherRunner(teacher, cfg, cache, progress=False)
    try:
        return await runner.run(requests, "throughput"), runner.stats
    finally:
        await teacher.aclose()


def measure_throughput(c: int, n: int, latency_s: float, workdir: Path) -> dict:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=serve_stub, args=(child, latency_s), daemon=True)
    server.start()
    try:
        cfg = TeacherConfig(backend="openai", model=MODEL, base_url=parent.recv(), api_key_env=KEY_ENV,
                            concurrency=c, cache_path=str(workdir / f"throughput-c{c}.sqlite"))
        requests = [TeacherRequest((Message("user", f"probe c={c} #{k}"),), Sampling(max_tokens=16)) for k in range(n)]
        cpu_started = time.process_time()
        with ResponseCache(cfg.cache_path) as cache:
            outcomes, stats = asyncio.run(run_batch(cfg, cache, requests))
        cpu_ms = (time.process_time() - cpu_started) * 1000 / n
        parent.send("stop")
        served = parent.recv()
    finally:
        server.join(timeout=10)
    ideal = c / latency_s
    return {"concurrency": c, "requests": n, "latency_s": latency_s, "seconds": round(stats.seconds, 3),
            "requests_per_second": round(stats.requests_per_second, 2), "ideal_requests_per_second": ideal,
            "ratio": round(stats.requests_per_second / ideal, 4), "answered": sum(o.ok for o in outcomes),
            "cache_hits": stats.cache_hits, "retries": stats.retries, "client_cpu_ms_per_request": round(cpu_ms, 3),
            "cpu_ceiling_requests_per_second": round(1000 / cpu_ms, 1), "stub": served}


class TruncatingResponder:
    """scripted_answer, cut in half (stub_server.corrupt_content) for a fixed ~``fraction`` of requests."""

    def __init__(self, fraction: float):
        self.threshold = int(fraction * 2**32)
        self.corrupted: set[str] = set()  # body fingerprints of the requests answered with truncated JSON
        self.prompts: dict[str, str] = {}  # fingerprint -> start of the last message, to name unexpected requests

    def __call__(self, body: dict[str, Any]) -> str:
        fingerprint, messages = body_fingerprint(body), body.get("messages") or [{}]
        self.prompts[fingerprint] = str(messages[-1].get("content"))[:100]
        answer = scripted_answer(body)
        digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode("utf-8")).digest()
        if int.from_bytes(digest[:4], "big") >= self.threshold:
            return answer
        self.corrupted.add(fingerprint)
        return corrupt_content(answer)


def start_faulty_stub(args: argparse.Namespace, responder: TruncatingResponder) -> StubServer:
    return StubServer(responder, latency_s=args.crash_latency, p_429=args.fault_rate, p_500=args.fault_rate,
                      seed=args.seed, retry_after_s=0.05, known_models=[MODEL]).start()


def synth_command(args: argparse.Namespace, workdir: Path, name: str, base_url: str) -> list[str]:
    """Write the run's config (the example's schema and 4 groups, a stub teacher) and return its command."""
    cfg = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    cfg.update(name=name, progress=False)
    cfg["subjects"]["per_group"] = args.per_group
    cfg["teacher"] = {"backend": "openai", "model": MODEL, "base_url": base_url, "api_key_env": KEY_ENV,
                      "concurrency": args.synth_concurrency, "max_retries": 10, "backoff_initial_s": args.backoff,
                      "backoff_max_s": 1.0, "cache_path": str(workdir / f"{name}.sqlite"),
                      "sampling": cfg["teacher"]["sampling"]}
    (workdir / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return [sys.executable, "-c", "from adaptlab.cli import run; run()", "synth", "generate", f"{workdir / name}.yaml"]


def start_synth(command: list[str], output: Path) -> subprocess.Popen:
    env = {key: value for key, value in os.environ.items() if key != KEY_ENV}
    with open(output.with_suffix(".log"), "w", encoding="utf-8") as log:  # the child keeps its own descriptor
        return subprocess.Popen([*command, "--output", str(output)], stdout=log, stderr=subprocess.STDOUT,
                                cwd=output.parent, env=env)


def finish_synth(process: subprocess.Popen, output: Path, timeout_s: float, started: float) -> dict:
    returncode = process.wait(timeout=timeout_s)
    if returncode != 0:
        console.print(f"{output.name} exited {returncode}:\n" + output.with_suffix(".log").read_text()[-2000:],
                      markup=False, highlight=False)
    metrics = json.loads((output / "metrics.json").read_text()) if (output / "metrics.json").exists() else {}
    rejects = output / "rejects.jsonl"
    reasons = Counter(json.loads(line)["reason"] for line in rejects.read_text().splitlines()) \
        if rejects.exists() else {}
    return {"returncode": returncode, "seconds": round(time.perf_counter() - started, 2), "metrics": metrics,
            "unparseable_rejects": reasons.get("unparseable answer", 0),
            **{f"{name}_sha256": hashlib.sha256((output / f"{name}.jsonl").read_bytes()).hexdigest()
               if (output / f"{name}.jsonl").exists() else None for name in ("records", "rejects")}}


def cached_fingerprints(cache_path: Path) -> set[str]:
    """body_fingerprint of the body the openai backend sends for each request stored in a teacher cache."""
    with contextlib.closing(sqlite3.connect(str(cache_path))) as conn:
        rows = conn.execute("SELECT model, request_json FROM responses").fetchall()
    requests = [(model, json.loads(request_json)) for model, request_json in rows]
    sent_fields = ("temperature", "top_p", "max_tokens", "seed")
    return {body_fingerprint({"messages": request["messages"], "model": model,
                              **{key: request["sampling"][key] for key in sent_fields}}) for model, request in requests}


def crash_recovery(args: argparse.Namespace, workdir: Path) -> dict:
    ref_responder, responder = TruncatingResponder(args.malformed_rate), TruncatingResponder(args.malformed_rate)
    ref_stub = start_faulty_stub(args, ref_responder)
    try:
        ref_command = synth_command(args, workdir, "reference", ref_stub.base_url)
        reference = finish_synth(start_synth(ref_command, workdir / "reference"), workdir / "reference", args.timeout,
                                 time.perf_counter())
        ref_stats = ref_stub.stats.snapshot()
    finally:
        ref_stub.stop()
    ref_answers = Counter(ref_stats["answered_by_fingerprint"])

    stub = start_faulty_stub(args, responder)
    try:
        command = synth_command(args, workdir, "crashed", stub.base_url)
        kill_after = max(1, len(ref_answers) // 2)
        process = start_synth(command, workdir / "crashed")
        deadline = time.monotonic() + args.timeout
        while process.poll() is None and stub.stats.answered < kill_after and time.monotonic() < deadline:
            time.sleep(0.002)
        answered_at_kill, was_running = stub.stats.answered, process.poll() is None
        if was_running:
            os.kill(process.pid, signal.SIGKILL)
        crash_rc = process.wait()
        time.sleep(args.crash_latency + 0.5)  # the stub finishes what was in flight when the client died
        crash_answers = Counter(stub.stats.snapshot()["answered_by_fingerprint"])
        cached_after_kill = cached_fingerprints(workdir / "crashed.sqlite")
        resume = finish_synth(start_synth(command, workdir / "resumed"), workdir / "resumed", args.timeout,
                              time.perf_counter())
        resume_answers = Counter(stub.stats.snapshot()["answered_by_fingerprint"]) - crash_answers
    finally:
        stub.stop()
    resent, union = set(crash_answers) & set(resume_answers), set(crash_answers) | set(resume_answers)
    runner = resume["metrics"].get("runner", {})
    return {
        "reference": {**reference, "answered": sum(ref_answers.values()), "unique_answered": len(ref_answers),
                      "stub_by_status": ref_stats["by_status"], "corrupted_answers": len(ref_responder.corrupted),
                      "command": shlex.join(ref_command)},
        "fingerprint_mapping_ok": cached_fingerprints(workdir / "reference.sqlite") == set(ref_answers),
        "crash": {"kill_after_answers": kill_after, "answered_at_kill": answered_at_kill, "was_running": was_running,
                  "returncode": crash_rc, "records_written": (workdir / "crashed" / "records.jsonl").exists(),
                  "answered": sum(crash_answers.values()), "cached_answers_after_kill": len(cached_after_kill),
                  "command": shlex.join(command)},
        "resume": {**resume, "answered": sum(resume_answers.values()), "cache_hits": runner.get("cache_hits"),
                   "sent": runner.get("sent"), "runner_answered": runner.get("answered")},
        "answered_twice_within_a_run": sum(n > 1 for run in (crash_answers, resume_answers) for n in run.values()),
        "answered_in_both_runs": len(resent),
        "resent_in_flight_at_kill": len(resent - cached_after_kill),
        "resent_although_cached": len(resent & cached_after_kill),
        "union_equals_reference": union == set(ref_answers),
        "not_in_reference": sorted(responder.prompts.get(fp, fp) for fp in union - set(ref_answers)),
        "missing_from_reference": sorted(ref_responder.prompts.get(fp, fp) for fp in set(ref_answers) - union),
    }


def evaluate(throughput: list[dict], crash: dict) -> list[dict]:
    ref, killed, resume = crash["reference"], crash["crash"], crash["resume"]
    retried = ref["metrics"].get("runner", {}).get("retry_reasons", {})
    sent = {str(status): n for status, n in ref["stub_by_status"].items()}
    unparseable = ref["metrics"].get("answers", {}).get("reasons", {}).get("unparseable answer", 0)
    targets = []
    for row in throughput:
        c, in_flight = row["concurrency"], row["stub"]["max_in_flight"]
        targets += [(f"(a) c={c}: req/s / (c/L) >= {TARGET_RATIO}", row["ratio"], row["ratio"] >= TARGET_RATIO),
                    (f"(a) c={c}: stub max_in_flight == c", in_flight, in_flight == c),
                    (f"(a) c={c}: all answered, no cache hits", f"{row['answered']}/{row['requests']}, "
                     f"{row['cache_hits']}", row["answered"] == row["requests"] and row["cache_hits"] == 0)]
    in_flight, total = crash["resent_in_flight_at_kill"], killed["answered"] + resume["answered"]
    targets += [
        ("(b) SIGKILLed mid-run, no records.jsonl", f"rc {killed['returncode']} after {killed['answered_at_kill']}/"
         f"{ref['unique_answered']}", killed["was_running"] and killed["returncode"] == -signal.SIGKILL
         and not killed["records_written"]),
        ("(b) resume exits 0", resume["returncode"], resume["returncode"] == 0),
        *((f"(b) resume {name}.jsonl sha256 == reference", str(resume[f"{name}_sha256"])[:12],
           resume[f"{name}_sha256"] is not None and resume[f"{name}_sha256"] == ref[f"{name}_sha256"])
          for name in ("records", "rejects")),
        ("(b) no cached answer asked again", f"{crash['resent_although_cached']} (+{in_flight} in flight at kill)",
         crash["fingerprint_mapping_ok"] and crash["resent_although_cached"] == 0
         and crash["answered_twice_within_a_run"] == 0),
        ("(b) resume cache hits == answers cached at kill", f"{resume['cache_hits']} == "
         f"{killed['cached_answers_after_kill']}", resume["cache_hits"] == killed["cached_answers_after_kill"]),
        ("(b) crash+resume answers == reference + in flight", f"{total} == {ref['unique_answered']} + {in_flight}",
         crash["union_equals_reference"] and total == ref["unique_answered"] + in_flight),
        ("(c) reference exits 0", ref["returncode"], ref["returncode"] == 0),
        ("(c) unparseable rejects == truncated answers", f"{unparseable} (metrics), {ref['unparseable_rejects']} "
         f"(rejects.jsonl) == {ref['corrupted_answers']}",
         unparseable == ref["unparseable_rejects"] == ref["corrupted_answers"] > 0),
        ("(c) every 429 / 500 retried", f"429: {retried.get('429', 0)}/{sent.get('429', 0)}, "
         f"500: {retried.get('500', 0)}/{sent.get('500', 0)}",
         retried.get("429", 0) == sent.get("429", 0) > 0 and retried.get("500", 0) == sent.get("500", 0) > 0),
    ]
    return [{"target": name, "value": value, "pass": bool(ok)} for name, value, ok in targets]


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "target", "value") else "right")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)


def print_results(throughput: list[dict], crash: dict, targets: list[dict]) -> None:
    print_table("(a) throughput: openai client -> TeacherRunner -> stub in its own process",
                ["c", "N", "seconds", "req/s", "ideal c/L", "ratio", "max in flight", "client CPU ms/req",
                 "CPU ceiling req/s"],
                [[r["concurrency"], r["requests"], r["seconds"], r["requests_per_second"],
                  r["ideal_requests_per_second"], r["ratio"], r["stub"]["max_in_flight"],
                  r["client_cpu_ms_per_request"], r["cpu_ceiling_requests_per_second"]] for r in throughput])
    ref, killed, resume = crash["reference"], crash["crash"], crash["resume"]
    runner = ref["metrics"].get("runner", {})
    print_table("(b) adaptlab synth generate", ["run", "exit", "seconds", "200 answers", "cache hits", "sent",
                                                 "records sha256"],
                [["reference", ref["returncode"], ref["seconds"], ref["answered"], runner.get("cache_hits"),
                  runner.get("sent"), str(ref["records_sha256"])[:12]],
                 ["crashed", killed["returncode"], "-", killed["answered"], "-", "-", "-"],
                 ["resumed", resume["returncode"], resume["seconds"], resume["answered"], resume["cache_hits"],
                  resume["sent"], str(resume["records_sha256"])[:12]]])
    print_table("targets", ["target", "value", "result"],
                [[t["target"], t["value"], "[green]PASS" if t["pass"] else "[red]FAIL"] for t in targets])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=1.0, help="(a) stub latency L in seconds")
    parser.add_argument("--concurrency", default="4,16,64", help="(a) comma-separated concurrency levels")
    parser.add_argument("--requests", type=int, default=0, help="(a) requests per level; 0: max(40, 20*c)")
    parser.add_argument("--crash-latency", type=float, default=0.05, help="(b) stub latency in seconds")
    parser.add_argument("--fault-rate", type=float, default=0.05, help="(b) probability of a 429, and of a 500")
    parser.add_argument("--malformed-rate", type=float, default=0.05, help="(b) share of answers truncated")
    parser.add_argument("--per-group", type=int, default=40, help="(b) subjects per group (4 groups)")
    parser.add_argument("--synth-concurrency", type=int, default=8, help="(b) teacher.concurrency")
    parser.add_argument("--backoff", type=float, default=0.05, help="(b) teacher.backoff_initial_s")
    parser.add_argument("--seed", type=int, default=0, help="(b) stub fault seed")
    parser.add_argument("--timeout", type=float, default=300, help="(b) seconds allowed per synth run")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results JSON")
    return parser.parse_args()


def main() -> int:
    args, started = parse_args(), time.perf_counter()
    env = {"cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
           "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
           "openai": openai.__version__, "platform": platform.platform()}
    with tempfile.TemporaryDirectory(prefix="adaptlab-teacher-bench-") as tmp:
        throughput = []
        for c in (int(part) for part in args.concurrency.split(",")):
            throughput.append(measure_throughput(c, args.requests or max(40, 20 * c), args.latency, Path(tmp)))
            console.print(f"(a) c={c}: {throughput[-1]['requests_per_second']} req/s, ratio {throughput[-1]['ratio']}")
        stub_stderr = io.StringIO()  # http.server prints a traceback per connection the killed client reset
        with contextlib.redirect_stderr(stub_stderr):
            crash = crash_recovery(args, Path(tmp))
    crash["stub_tracebacks"] = Counter(line for line in stub_stderr.getvalue().splitlines() if "Error" in line[:40])
    if crash["stub_tracebacks"]:
        console.print(f"stub server tracebacks (hidden): {dict(crash['stub_tracebacks'])}", markup=False)
    targets = evaluate(throughput, crash)
    print_results(throughput, crash, targets)
    passed = all(t["pass"] for t in targets)
    results = {"command": shlex.join(["python", *sys.argv]), "environment": env,
               "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "model": MODEL, "throughput": throughput, "crash_recovery": crash, "targets": targets,
               "all_pass": passed, "seconds": round(time.perf_counter() - started, 1)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    verdict = "all targets pass" if passed else "SOME TARGETS FAIL"
    console.print(f"{verdict} in {results['seconds']} s; wrote {args.output}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
