"""``adaptlab ner train|evaluate|predict``."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import console, ner_summary_table, print_json

app = typer.Typer(no_args_is_help=True)


@app.command()
def train(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides"),
    train_file: Optional[str] = typer.Option(None, "--train", help="training data (JSONL, CoNLL, ...)"),
    dev: Optional[str] = typer.Option(None, "--dev", help="dev data for early stopping and model choice"),
    model: Optional[str] = typer.Option(None, "--model", help="HF name or path; default: packaged MiniLM"),
    output: Optional[str] = typer.Option(None, "--output", help="run directory (must not exist)"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML config"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    learning_rate: Optional[float] = typer.Option(None, "--lr"),
    seed: Optional[int] = typer.Option(None, "--seed"),
) -> None:
    """Fine-tune a NER student and evaluate it on dev."""
    from adaptlab.config import load_config
    from adaptlab.recipes import ner

    cfg = load_config(ner.NERTrainConfig, config, overrides, {
        "train": train_file, "dev": dev, "model": model, "output": output,
        "training.num_train_epochs": epochs, "training.learning_rate": learning_rate, "training.seed": seed,
    })
    run, metrics = ner.train(cfg)
    for line in [f"note: {n}" for n in metrics["notes"]] + [f"warning: {w}" for w in metrics["warnings"]]:
        console.print(line)
    if "dev" in metrics:
        console.print(ner_summary_table(metrics["dev"], "dev"))
    console.print(f"run directory: {run.path}  (model: {run.model}, report: {run.report})")


@app.command()
def evaluate(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides"),
    model: Optional[str] = typer.Option(None, "--model", help="run directory or model directory"),
    data: Optional[str] = typer.Option(None, "--data", help="gold data (JSONL, CoNLL, ...)"),
    output: Optional[str] = typer.Option(None, "--output", help="write a run directory with report"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML config"),
    as_json: bool = typer.Option(False, "--json", help="print metrics as JSON"),
) -> None:
    """Score a trained NER student on gold data: strict, overlap and token-level F1."""
    from adaptlab.config import load_config
    from adaptlab.recipes import ner

    cfg = load_config(ner.NEREvalConfig, config, overrides, {"model": model, "data": data, "output": output})
    report, run = ner.evaluate(cfg)
    if as_json:
        print_json(report)
        return
    console.print(ner_summary_table(report, f"{cfg.data}"))
    if run:
        console.print(f"run directory: {run.path}")


@app.command()
def predict(
    model: str = typer.Option(..., "--model", help="run directory or model directory"),
    input_file: Optional[str] = typer.Option(None, "--input", help="JSONL records or one text per line"),
    text: Optional[str] = typer.Option(None, "--text", help="a single text"),
    output: Optional[str] = typer.Option(None, "--output", help="write canonical JSONL here"),
) -> None:
    """Tag texts; prints canonical JSONL records with character spans and scores."""
    from adaptlab.data.records import iter_jsonl
    from adaptlab.data.texts import read_texts
    from adaptlab.recipes import ner

    records = ner.predict(model, read_texts(input_file, text), output)
    if output:
        console.print(f"wrote {len(records)} records to {output}")
    else:
        for line in iter_jsonl(records):
            print(line)
