"""``adaptlab domain-instruct CONFIG | domain-instruct demo``: continual pretraining, chat vector, evaluation."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import (
    RunByDefault,
    config_argument,
    console,
    output_option,
    overrides_argument,
    resolve_config,
    status,
)

app = typer.Typer(cls=RunByDefault, no_args_is_help=True)


def _print_table(table: list[dict]) -> None:
    for row in table:
        console.print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))


@app.command()
def run(
    config: Optional[str] = config_argument("YAML config file, or a shipped one's name (e.g. domain_instruct)"),
    overrides: Optional[list[str]] = overrides_argument(),
    output: Optional[str] = output_option("run directory; the same one continues a run"),
) -> None:
    """Base -> domain by continual pretraining, + λ·(instruct − base), then all four models compared."""
    from adaptlab.config import load_config
    from adaptlab.recipes import domain_instruct

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(domain_instruct.DomainInstructConfig, config, overrides, {"output": output})
    run_dir, metrics = domain_instruct.run(cfg)
    _print_table(metrics["table"])
    console.print(f"report: {run_dir.report}")


@app.command()
def demo(
    output: Optional[str] = output_option("run directory (default runs/<time>-...)"),
    cpt_steps: int = typer.Option(120, "--cpt-steps", help="continual-pretraining steps"),
) -> None:
    """The whole recipe offline on tiny models trained from scratch here (a few minutes on 2 CPU cores)."""
    from adaptlab.recipes import domain_instruct_demo

    status("Training a tiny base and instruct model from scratch, then running the recipe...")
    run_dir, metrics = domain_instruct_demo.run_demo(output, cpt_steps, say=console.print)
    _print_table(metrics["table"])
    console.print(f"took {metrics['seconds']} s; report: {run_dir.report}")
