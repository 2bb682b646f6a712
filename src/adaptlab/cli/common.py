"""Small helpers shared by the CLI modules: printing, and a group that runs a config by default."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

# User data (paths, texts with [E1] markers) must never be read as rich markup.
console = Console(markup=False, highlight=False)


class RunByDefault(TyperGroup):
    """``adaptlab GROUP CONFIG`` means ``adaptlab GROUP run CONFIG``; named subcommands still work."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def config_or_override(config: str | None, overrides: list[str] | None) -> tuple[str | None, list[str] | None]:
    """``COMMAND key=value ...`` with no config file: the first argument is an override too."""
    if config and "=" in config and not Path(config).exists():
        return None, [config, *(overrides or [])]
    return config, overrides


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def ner_summary_table(report: dict, title: str) -> Table:
    """Headline table: strict / overlap / token-level micro and macro F1, then per-type strict F1."""
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("micro F1", justify="right")
    table.add_column("macro F1", justify="right")
    for mode in ("strict", "overlap", "token"):
        if mode in report:
            table.add_row(mode, f"{report[mode]['micro']['f1']:.4f}", f"{report[mode]['macro']['f1']:.4f}")
    for label, row in report.get("strict", {}).get("per_type", {}).items():
        table.add_row(f"  strict {label}", f"{row['f1']:.4f}", f"(support {row['support']})")
    return table


def print_stage_accounting(stages: dict) -> None:
    """One line per generation stage: proposed = accepted + rejected."""
    for stage, row in stages.items():
        console.print(f"{stage:>10}: {row['proposed']} proposed = {row['accepted']} accepted "
                      f"+ {row['rejected']} rejected")


def print_student_result(test_report: dict, triples: dict, title: str, run_path) -> None:
    """The closing lines of a demo: entity F1 table, triple F1, where the run and report are."""
    console.print(ner_summary_table(test_report, title))
    console.print(f"triple F1 (NER + type rules): {triples['micro']['f1']:.4f}")
    console.print(f"run directory: {run_path}\nreport: {run_path / 'report.html'}")
