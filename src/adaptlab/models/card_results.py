"""The run's results as a model card shows them: the data (files and counts) and the headline metrics, and the
Markdown helpers the card is written with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA_KEYS = ("train", "dev", "data", "dataset", "eval_data", "eval_dataset", "corpus", "scores", "bags")
COUNT_KEYS = ("train_records", "dev_records", "train_examples", "dev_examples", "truncated_records",
              "truncated_examples")
COUNT_GROUPS = ("data_stats", "data", "counts", "held_out_counts")
RUN_NUMBERS = ("dev_f1", "best_mean_dev_f1", "steps", "epochs", "train_seconds", "tensors", "output_dtype", "seconds")
LISTED = 12  # labels named before "..."
COUNT_LINES = 24


def data_text(config: dict[str, Any], metrics: dict[str, Any], merge: bool) -> str:
    """The data files the run config names and the counts its metrics hold."""
    if merge and "corpus" not in config:
        return "None: a merge combines the weights of its inputs and reads no data."
    files = []
    for key in DATA_KEYS:
        value = config.get(key)
        path = value.get("path") if isinstance(value, dict) else value
        if isinstance(path, str) and path:
            files.append(f"- {key}: `{path}`")
    counts = [f"- {key}: {metrics[key]}" for key in COUNT_KEYS if metrics.get(key) is not None]
    labels = metrics.get("labels")
    if isinstance(labels, list):
        counts.append(f"- labels: {len(labels)} ({listed(labels)})")
    for group in COUNT_GROUPS:
        if isinstance(metrics.get(group), dict):
            counts += [f"- {group}.{key}: {value}" for key, value in flat_numbers(metrics[group])]
    counts = counts[:COUNT_LINES] + (["- ... (the rest in metrics.json)"] if len(counts) > COUNT_LINES else [])
    parts = [("Files:\n" + "\n".join(files)) if files else "The run recorded no data files.",
             ("Counts:\n" + "\n".join(counts)) if counts else ""]
    return "\n\n".join(part for part in parts if part)


def metrics_text(metrics: dict[str, Any], run_location: Path | None) -> str:
    """A table of the headline numbers (:func:`report_headline` of the dev and test reports, the final losses and
    perplexities, ...), a comparison table when the run made one, and where the rest is."""
    rows = []
    for split in ("dev", "test"):
        if isinstance(metrics.get(split), dict):
            rows += [(f"{split} {name}", value) for name, value in report_headline(metrics[split]).items()]
    rows += [(key, value) for key, value in metrics.items() if key.startswith("final_") and is_number(value)]
    rows += [(key, metrics[key]) for key in RUN_NUMBERS if key in metrics and metrics[key] is not None]
    table = markdown_table(["metric", "value"], [[name, compact(value)] for name, value in rows]) if rows else ""
    comparison = metrics.get("table")
    if isinstance(comparison, list) and comparison and isinstance(comparison[0], dict):
        columns = list(comparison[0])
        table += ("\n\n" if table else "") + markdown_table(columns, [[compact(row.get(c)) for c in columns]
                                                                     for row in comparison])
    text = table or "No held-out scores were measured for this model."
    if run_location is not None:
        text += f"\n\nEvery number the run measured is in `metrics.json` and `report.html` of `{run_location}`."
    return text


def report_headline(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of an evaluation report, by its shape: an NER report (``strict``, ``overlap``,
    ``token``), a text-classification report (``macro_f1`` at the top) or classification P/R/F1 (``macro`` and
    ``accuracy``, relation classifiers); else its top-level numbers."""
    if isinstance(report.get("strict"), dict):
        strict = report["strict"]
        return {"strict micro F1": strict["micro"]["f1"], "strict micro precision": strict["micro"]["precision"],
                "strict micro recall": strict["micro"]["recall"], "strict macro F1": strict["macro"]["f1"],
                "overlap micro F1": report["overlap"]["micro"]["f1"], "token macro F1": report["token"]["macro"]["f1"]}
    if "macro_f1" in report:
        return {key: report[key] for key in ("accuracy", "macro_f1", "micro_f1") if key in report}
    if isinstance(report.get("macro"), dict) and "accuracy" in report:
        return {"accuracy": report["accuracy"], "macro F1": report["macro"]["f1"], "micro F1": report["micro"]["f1"],
                "weighted F1": report["weighted"]["f1"]}
    return {key: value for key, value in report.items() if is_number(value)}


def flat_numbers(group: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(dotted key, value)`` for the numbers and short strings in nested dicts (lists are left out)."""
    rows = []
    for key, value in group.items():
        if isinstance(value, dict):
            rows += flat_numbers(value, f"{prefix}{key}.")
        elif is_number(value) or (isinstance(value, str) and len(value) <= 80):
            rows.append((f"{prefix}{key}", compact(value)))
    return rows


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def compact(value: Any) -> str:
    """A value as a card shows it: floats to 4 significant digits, lists and dicts as short JSON."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        text = json.dumps(value, ensure_ascii=False)
        return text if len(text) <= 80 else text[:77] + "..."
    return str(value)


def listed(names: list[str]) -> str:
    return ", ".join(map(str, names[:LISTED])) + (", ..." if len(names) > LISTED else "")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[Any]) -> str:
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def fenced(language: str, text: str) -> str:
    """``text`` in a fenced code block, with a fence longer than any backtick run inside it."""
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{language}\n{text.rstrip()}\n{fence}"
