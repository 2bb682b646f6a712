"""``adaptlab re train|evaluate|predict`` (module named re_cmd to avoid shadowing the re module)."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import console, print_json

app = typer.Typer(no_args_is_help=True)


@app.command()
def train(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides"),
    train_file: Optional[str] = typer.Option(None, "--train", help="records with relations, or marker CSV"),
    dev: Optional[str] = typer.Option(None, "--dev"),
    model: Optional[str] = typer.Option(None, "--model", help="HF name or path; default: packaged MiniLM"),
    output: Optional[str] = typer.Option(None, "--output", help="run directory (must not exist)"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML config"),
    epochs: Optional[float] = typer.Option(None, "--epochs"),
    seed: Optional[int] = typer.Option(None, "--seed"),
) -> None:
    """Fine-tune a relation classifier over entity-marker inputs."""
    from adaptlab.config import load_config
    from adaptlab.recipes import relations

    cfg = load_config(relations.RETrainConfig, config, overrides, {
        "train": train_file, "dev": dev, "model": model, "output": output,
        "training.num_train_epochs": epochs, "training.seed": seed,
    })
    run, metrics = relations.train(cfg)
    for line in [f"note: {n}" for n in metrics["notes"]] + [f"warning: {w}" for w in metrics["warnings"]]:
        console.print(line)
    if "dev" in metrics:
        console.print(f"dev weighted F1 {metrics['dev']['weighted']['f1']:.4f}, "
                      f"macro F1 {metrics['dev']['macro']['f1']:.4f}")
    console.print(f"run directory: {run.path}")


@app.command()
def evaluate(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides"),
    model: Optional[str] = typer.Option(None, "--model", help="run directory or model directory"),
    data: Optional[str] = typer.Option(None, "--data", help="records with relations, or marker CSV"),
    negatives: Optional[bool] = typer.Option(None, "--negatives/--no-negatives",
                                             help="also score unrelated candidate pairs as no_relation"),
    output: Optional[str] = typer.Option(None, "--output", help="write a run directory with predictions and report"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML config"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Per-class and weighted F1 of a relation classifier."""
    from adaptlab.config import load_config
    from adaptlab.recipes import relations

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
    model: str = typer.Option(..., "--model"),
    input_file: Optional[str] = typer.Option(None, "--input", help="one marked sentence per line"),
    text: Optional[str] = typer.Option(None, "--text", help="[E1]head[/E1] ... [E2]tail[/E2]"),
) -> None:
    """Classify marked sentences; prints one JSON object per line."""
    import json

    from adaptlab.data.texts import read_texts
    from adaptlab.recipes import relations

    for row in relations.predict(model, read_texts(input_file, text, annotated=False)):
        print(json.dumps(row, ensure_ascii=False))
