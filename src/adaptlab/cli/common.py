"""What the CLI modules share: the argument and option aliases of the one command shape, printing, and the
messages for command-line forms that changed.

Every command reads ``adaptlab GROUP COMMAND [CONFIG] [key=value ...] [--flags]``: the config is an optional
first argument (a YAML file or the name of a shipped one), ``key=value`` overrides follow, and everything a
command writes goes to ``--output`` / ``-o``. The aliases below are the only place these arguments are spelled.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand, TyperGroup

try:  # typer >= 0.20 vendors click as typer._click and raises its exceptions
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - an older typer on the real click
    from click import exceptions as click_exceptions

# User data (paths, texts with [E1] markers) must never be read as rich markup.
# soft_wrap: a printed line is never broken at the console width (a log file of the run keeps each fact on one line)
console = Console(markup=False, highlight=False, soft_wrap=True)
status_console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)

CONFIG_HELP = "YAML config file, or the name of a shipped one (adaptlab config list)"
OVERRIDES_HELP = "key=value config overrides (dotted keys: training.seed=1)"
RUN_OUTPUT_HELP = "run directory to write (must not exist)"
OLD_FORMS = {  # an option some commands no longer have -> the form that replaced it ({command}: the command path)
    "--config": ("config", "--config is gone; the config is the first argument: {command} CONFIG [key=value ...]"),
    "--out": ("output", "--out is now --output: {command} ... --output PATH"),
}


def config_argument(help: str = CONFIG_HELP) -> Any:
    return typer.Argument(None, help=help, show_default=False)


def overrides_argument(help: str = OVERRIDES_HELP) -> Any:
    return typer.Argument(None, help=help, show_default=False)


def output_option(help: str = RUN_OUTPUT_HELP, required: bool = False) -> Any:
    return typer.Option(... if required else None, "--output", "-o", help=help, show_default=False)


def json_option(help: str = "print the result as JSON on stdout") -> Any:
    return typer.Option(False, "--json", help=help)


def model_option(help: str = "run directory or model directory", required: bool = False) -> Any:
    return typer.Option(... if required else None, "--model", help=help, show_default=False)


def schema_option(help: str = "preset name (biospecies) or YAML file with a schema: section (a synth config)") -> Any:
    return typer.Option(None, "--schema", help=help, show_default=False)


def train_data_option(formats: str) -> Any:
    return typer.Option(None, "--train", help=f"training data ({formats})", show_default=False)


def dev_option() -> Any:
    return typer.Option(None, "--dev", help="dev data for early stopping and model choice", show_default=False)


def epochs_option() -> Any:
    return typer.Option(None, "--epochs", help="training.num_train_epochs", show_default=False)


def learning_rate_option() -> Any:
    return typer.Option(None, "--lr", help="training.learning_rate", show_default=False)


def seed_option() -> Any:
    return typer.Option(None, "--seed", help="training.seed", show_default=False)


def texts_option() -> Any:
    return typer.Option(None, "--text", help='a text to read (repeat for several); or --input FILE',
                        show_default=False)


class RunByDefault(TyperGroup):
    """``adaptlab GROUP CONFIG`` means ``adaptlab GROUP run CONFIG``; named subcommands still work."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


def resolve_config(config: str | None, overrides: list[str] | None) -> tuple[str | None, list[str] | None]:
    """The CONFIG argument as a file to load, and the overrides.

    CONFIG is a YAML file, else the name of a shipped example (``adaptlab config list``); a ``key=value`` in its
    place means there is no config file and it is the first override.
    """
    from adaptlab import example_configs
    from adaptlab.errors import ConfigError

    misplaced = next((item for item in overrides or [] if "=" not in item and item.endswith((".yaml", ".yml"))), None)
    if misplaced:
        raise ConfigError(f"{misplaced} is not key=value; a config file goes first: COMMAND CONFIG [key=value ...]")
    if config is None or Path(config).exists():
        return config, overrides
    if "=" in config:
        return None, [config, *(overrides or [])]
    shipped = example_configs.find(config)
    if shipped is not None and shipped.is_file():
        return str(shipped), overrides
    raise ConfigError(f"config file {config} not found; give a YAML file, the name of a shipped config "
                      "(adaptlab config list) or key=value overrides")


def texts_or_file(texts: list[str] | None, input_file: str | None, read_file) -> list[str]:
    """The ``--text`` values, or what ``read_file(--input)`` reads: exactly one of the two must be given."""
    from adaptlab.errors import AdaptlabError

    if bool(texts) == bool(input_file):
        raise AdaptlabError('give --text "..." (once per text) or --input FILE, not both')
    if input_file:
        return read_file(input_file)
    if not all(text.strip() for text in texts):
        raise AdaptlabError("--text is empty; every text needs some words")
    return list(texts)


class WithOldArguments(TyperCommand):
    """A command with :func:`old_argument` parameters, which stay out of its usage line as out of its help."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not getattr(param, "hidden", False):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


def old_argument(new_form: str) -> Any:
    """A hidden argument that catches a form the command no longer has and names the new one (usage error, exit 2);
    its command is declared with ``cls=WithOldArguments``.

    ``new_form`` may hold ``{value}``: what was given in the old place. It is checked as soon as it is parsed,
    before a required option of the new form is missed.
    """
    def refuse(ctx: typer.Context, value):
        if value:
            given = " ".join(value) if isinstance(value, (list, tuple)) else value
            raise click_exceptions.UsageError(new_form.format(value=given), ctx=ctx)
        return value

    return typer.Argument(None, hidden=True, callback=refuse, show_default=False)


def old_option_message(option: str, ctx) -> str | None:
    """For an option the command of ``ctx`` does not know: one line naming the form that replaced it, if any."""
    if option not in OLD_FORMS or ctx is None:
        return None
    replacement, message = OLD_FORMS[option]
    if not any(param.name == replacement for param in ctx.command.params):
        return None
    return message.format(command=ctx.command_path)


def status(message: str) -> None:
    """A line about what the command is doing (stderr); ``adaptlab -q`` leaves it out."""
    from adaptlab.runs import progress_enabled

    if progress_enabled():
        status_console.print(message)


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


def train_student(config_type: type, train: Callable[[Any], tuple[Any, dict]], config: str | None,
                  overrides: list[str] | None, flags: dict[str, Any], dev_summary: Callable[[dict], Any]) -> None:
    """The body of ``ner|re|cls train``: the config from CONFIG, overrides and the flags (``--train``, ``--dev``,
    ``--model``, ``--output``, ``--epochs``, ``--lr``, ``--seed``, by config key), training, then the notes and
    warnings, ``dev_summary`` of the dev metrics (a table or a line) and where the run is."""
    from adaptlab.config import load_config

    config, overrides = resolve_config(config, overrides)
    run, metrics = train(load_config(config_type, config, overrides, flags))
    for line in [f"note: {n}" for n in metrics["notes"]] + [f"warning: {w}" for w in metrics["warnings"]]:
        console.print(line)
    if "dev" in metrics:
        console.print(dev_summary(metrics["dev"]))
    console.print(f"run directory: {run.path}  (model: {run.model}, report: {run.report})")


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
