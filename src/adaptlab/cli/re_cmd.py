"""``adaptlab re train|evaluate|predict`` (module named re_cmd to avoid shadowing the re module)."""

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


def dev_line(scores: dict) -> str:
    return f"dev weighted F1 {scores['weighted']['f1']:.4f}, macro F1 {scores['macro']['f1']:.4f}"


@app.command()
def train(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    train_file: Optional[str] = train_data_option("records with relations, or marker CSV"),
    dev: Optional[str] = dev_option(),
    model: Optional[str] = model_option("HF name or path; default: packaged MiniLM"),
    output: Optional[str] = output_option(),
    epochs: Optional[float] = epochs_option(),
    learning_rate: Optional[float] = learning_rate_option(),
    seed: Optional[int] = seed_option(),
) -> None:
    """Fine-tune a relation classifier over entity-marker inputs."""
    from adaptlab.recipes import relations

    train_student(relations.RETrainConfig, relations.train, config, overrides, {
        "train": train_file, "dev": dev, "model": model, "output": output,
        "training.num_train_epochs": epochs, "training.learning_rate": learning_rate, "training.seed": seed,
    }, dev_line)


@app.command()
def evaluate(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    model: Optional[str] = model_option(),
    data: Optional[str] = typer.Option(None, "--data", help="records with relations, or marker CSV"),
    negatives: Optional[bool] = typer.Option(None, "--negatives/--no-negatives",
                                             help="also score unrelated candidate pairs as no_relation"),
    output: Optional[str] = output_option("write a run directory with predictions and report (must not exist)"),
    as_json: bool = json_option("print the scores as JSON"),
) -> None:
    """Per-class and weighted F1 of a relation classifier."""
    from adaptlab.config import load_config
    from adaptlab.recipes import relations

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(relations.REEvalConfig, config, overrides,
                      {"model": model, "data": data, "negatives": negatives, "output": output})
    scores, run = relations.evaluate(cfg)
    if as_json:
        print_json(scores)
        return
    for label, row in scores["per_class"].items():
        console.print(f"{label:>14}  F1 {row['f1']:.4f}  (support {row['support']})")
    console.print(f"{'weighted':>14}  F1 {scores['weighted']['f1']:.4f}")
    if run:
        console.print(f"run directory: {run.path}")


@app.command()
def predict(
    model: str = model_option(required=True),
    texts: Optional[list[str]] = texts_option(),
    input_file: Optional[str] = typer.Option(None, "--input", help="one marked sentence per line"),
    output: Optional[str] = output_option("write JSONL here (must not exist)"),
) -> None:
    """Classify marked sentences ([E1]head[/E1] ... [E2]tail[/E2]); prints one JSON object per line."""
    import json

    from adaptlab.data.texts import read_texts
    from adaptlab.recipes import relations
    from adaptlab.runs import atomic_write_jsonl, refuse_existing

    if output:
        refuse_existing(output, "output file")
    rows = relations.predict(model, texts_or_file(texts, input_file, lambda path: read_texts(path, None, False)))
    if output:
        atomic_write_jsonl(output, rows)
        console.print(f"wrote {len(rows)} predictions to {output}")
        return
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
