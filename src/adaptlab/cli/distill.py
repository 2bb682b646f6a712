"""``adaptlab distill demo``: teacher -> review -> student, offline on shipped resources."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import console, output_option, print_stage_accounting, print_student_result, status

app = typer.Typer(no_args_is_help=True)


@app.command()
def demo(
    output: Optional[str] = output_option("run directory (default runs/<time>-distill-demo)"),
    epochs: float = typer.Option(20, "--epochs", help="student training epochs"),
) -> None:
    """Replay teacher -> validated synthetic data -> reviewed data -> MiniLM student -> test F1 (minutes on CPU)."""
    from adaptlab.recipes import distill

    path, metrics = distill.run(output, epochs, say=status)
    print_stage_accounting(metrics["generation"])
    counts = metrics["review"]["counts"]
    agreement = metrics["review"]["agreement"]["spans"]["strict"]["micro"]["f1"]
    # one fact a line (the console never wraps a line: cli.common)
    console.print(f"review: {counts['verified']} verified ({counts['edited']} edited), {counts['unverified']} "
                  f"unverified, {counts['removed']} removed")
    console.print(f"teacher vs reviewers: strict span F1 {agreement:.4f}")
    student = metrics["student"]
    print_student_result(student["test"], student["test_triples"], "student on the demo test set", path)
