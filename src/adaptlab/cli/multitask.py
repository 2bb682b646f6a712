"""``adaptlab multitask train``: one shared encoder with a head per task (NER, RE, text classification)."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from adaptlab.cli.common import (
    config_argument,
    console,
    model_option,
    output_option,
    overrides_argument,
    resolve_config,
)

app = typer.Typer(no_args_is_help=True)


@app.command()
def train(
    config: Optional[str] = config_argument("YAML config, or a shipped one's name (e.g. multitask)"),
    overrides: Optional[list[str]] = overrides_argument(),
    model: Optional[str] = model_option("the shared encoder; default: packaged MiniLM"),
    output: Optional[str] = output_option(),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="training.num_train_epochs"),
    seed: Optional[int] = typer.Option(None, "--seed", help="training.seed"),
) -> None:
    """Train one encoder on every task of the config at once; export each task as an HF model in tasks/NAME/."""
    from adaptlab.config import load_config
    from adaptlab.recipes import multitask

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(multitask.MultitaskConfig, config, overrides, {
        "model": model, "output": output, "training.num_train_epochs": epochs, "training.seed": seed,
    })
    run, metrics = multitask.train(cfg)
    table = Table(title="dev scores of the exported tasks")
    for column in ("task", "type", "train", "dev", "dev F1", "model directory"):
        table.add_column(column)
    for name, task in metrics["tasks"].items():
        score = f"{task['dev_f1']:.4f}" if "dev_f1" in task else "-"
        table.add_row(name, task["type"], str(task["train_examples"]), str(task["dev_examples"]), score,
                      str(run.path / task["export"]))
    console.print(table)
    console.print("dev F1: strict entity macro F1 (ner), macro F1 (re, cls)")
    console.print(f"run directory: {run.path}  (report: {run.report})")
