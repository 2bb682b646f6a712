"""``adaptlab cls train|evaluate|predict``: text classification (single- or multi-label)."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.table import Table

from adaptlab.cli.common import (
    WithOldArguments,
    config_argument,
    console,
    dev_option,
    epochs_option,
    json_option,
    learning_rate_option,
    model_option,
    old_argument,
    output_option,
    overrides_argument,
    print_json,
    resolve_config,
    seed_option,
    texts_option,
    texts_or_file,
    train_data_option,
    train_student,
)

app = typer.Typer(no_args_is_help=True)


def summary_table(report: dict, title: str) -> Table:
    """Headline numbers, then F1 and support per class."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    names = ["accuracy", "macro_f1", "micro_f1"] + (["subset_accuracy"] if report.get("multi_label") else [])
    for name in names:
        table.add_row(name.replace("_", " "), f"{report[name]:.4f}")
    for label, row in report["per_class"].items():
        table.add_row(f"  F1 {label}", f"{row['f1']:.4f} (support {row['support']})")
    return table


@app.command()
def train(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    train_file: Optional[str] = train_data_option("JSONL, CSV, TSV, LABEL TEXT"),
    dev: Optional[str] = dev_option(),
    model: Optional[str] = model_option("HF name or path; default: packaged MiniLM"),
    output: Optional[str] = output_option(),
    epochs: Optional[float] = epochs_option(),
    learning_rate: Optional[float] = learning_rate_option(),
    seed: Optional[int] = seed_option(),
) -> None:
    """Fine-tune a text classifier and evaluate it on dev (held out from train when no --dev)."""
    from adaptlab.recipes import cls

    train_student(cls.ClsTrainConfig, cls.train, config, overrides, {
        "train": train_file, "dev": dev, "model": model, "output": output,
        "training.num_train_epochs": epochs, "training.learning_rate": learning_rate, "training.seed": seed,
    }, lambda dev_report: summary_table(dev_report, "dev"))


@app.command()
def evaluate(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    model: Optional[str] = model_option(),
    data: Optional[str] = typer.Option(None, "--data", help="labelled data (JSONL, CSV, TSV, LABEL TEXT)"),
    output: Optional[str] = output_option("write a run directory with predictions and report (must not exist)"),
    as_json: bool = json_option("print the report as JSON"),
) -> None:
    """Score a trained classifier: accuracy, macro/micro F1, per-class P/R/F1, confusion matrix."""
    from adaptlab.config import load_config
    from adaptlab.recipes import cls

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(cls.ClsEvalConfig, config, overrides, {"model": model, "data": data, "output": output})
    report, run = cls.evaluate(cfg)
    if as_json:
        print_json(report)
        return
    console.print(summary_table(report, f"{cfg.data}"))
    if run:
        console.print(f"run directory: {run.path}")


@app.command(cls=WithOldArguments)
def predict(
    model: str = model_option(required=True),
    texts: Optional[list[str]] = texts_option(),
    input_file: Optional[str] = typer.Option(
        None, "--input", help="JSONL/CSV/TSV (the text column), else one text per line"),
    text_column: str = typer.Option("text", "--text-column", help="the text key or column of a JSONL/CSV/TSV input"),
    output: Optional[str] = output_option("write JSONL here (must not exist)"),
    _old_texts: Optional[list[str]] = old_argument(
        'texts are given with --text now: adaptlab cls predict --model MODEL --text "..." [--text "..."]'),
) -> None:
    """Classify texts; prints one JSON object per text: text, label (or labels), scores per label."""
    from adaptlab.data.classification import texts_to_classify
    from adaptlab.recipes import cls

    inputs = texts_or_file(texts, input_file, lambda path: texts_to_classify(path, text_column=text_column))
    rows = cls.predict(model, inputs, output)
    if output:
        console.print(f"wrote {len(rows)} predictions to {output}")
    else:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
