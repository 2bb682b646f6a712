"""``adaptlab ner train|evaluate|predict``."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import (
    config_argument,
    console,
    dev_option,
    epochs_option,
    json_option,
    learning_rate_option,
    model_option,
    ner_summary_table,
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


@app.command()
def train(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    train_file: Optional[str] = train_data_option("JSONL, CoNLL, ..."),
    dev: Optional[str] = dev_option(),
    model: Optional[str] = model_option("HF name or path; default: packaged MiniLM"),
    output: Optional[str] = output_option(),
    epochs: Optional[float] = epochs_option(),
    learning_rate: Optional[float] = learning_rate_option(),
    seed: Optional[int] = seed_option(),
) -> None:
    """Fine-tune a NER student and evaluate it on dev."""
    from adaptlab.recipes import ner

    train_student(ner.NERTrainConfig, ner.train, config, overrides, {
        "train": train_file, "dev": dev, "model": model, "output": output,
        "training.num_train_epochs": epochs, "training.learning_rate": learning_rate, "training.seed": seed,
    }, lambda dev_report: ner_summary_table(dev_report, "dev"))


@app.command()
def evaluate(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    model: Optional[str] = model_option(),
    data: Optional[str] = typer.Option(None, "--data", help="gold data (JSONL, CoNLL, ...)"),
    output: Optional[str] = output_option("write a run directory with the report (must not exist)"),
    as_json: bool = json_option("print metrics as JSON"),
) -> None:
    """Score a trained NER student on gold data: strict, overlap and token-level F1."""
    from adaptlab.config import load_config
    from adaptlab.recipes import ner

    config, overrides = resolve_config(config, overrides)
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
    model: str = model_option(required=True),
    texts: Optional[list[str]] = texts_option(),
    input_file: Optional[str] = typer.Option(None, "--input", help="JSONL records or one text per line"),
    output: Optional[str] = output_option("write canonical JSONL here (must not exist)"),
) -> None:
    """Tag texts; prints canonical JSONL records with character spans and scores."""
    from adaptlab.data.records import iter_jsonl
    from adaptlab.data.texts import read_texts
    from adaptlab.recipes import ner

    records = ner.predict(model, texts_or_file(texts, input_file, lambda path: read_texts(path, None)), output)
    if output:
        console.print(f"wrote {len(records)} records to {output}")
    else:
        for line in iter_jsonl(records):
            print(line)
