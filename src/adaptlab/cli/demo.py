"""``adaptlab demo``: train and evaluate the default student offline on the shipped example set."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import output_option, print_student_result, status


def demo(
    output: Optional[str] = output_option("run directory (default runs/<time>-demo)"),
    epochs: float = typer.Option(12, "--epochs", help="training epochs"),
) -> None:
    """Train the packaged MiniLM NER student on the demo set and report test F1 (a few minutes on CPU)."""
    from adaptlab.recipes import demo as recipe

    status("Training the default student (all-MiniLM-L6-v2) on the shipped demo set...")
    path, metrics = recipe.run(output, epochs)
    print_student_result(metrics["test"], metrics["test_triples"], "demo test set", path)
