"""The ``adaptlab`` command line. Each command group lives in its own module and only parses
arguments, calls a recipe or building block, and prints; no logic lives here."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from adaptlab.errors import AdaptlabError

app = typer.Typer(
    name="adaptlab",
    help="Adapt language models to a domain when labelled data is scarce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")) -> None:
    _state["debug"] = debug


def _register() -> None:
    from adaptlab.cli import (
        data,
        demo,
        distill,
        domain_instruct,
        extract,
        fractal,
        lm,
        merge,
        model,
        ner,
        re_cmd,
        synth,
        teacher,
    )

    app.add_typer(data.app, name="data", help="Inspect, repair and convert annotated data.")
    app.add_typer(ner.app, name="ner", help="Train, evaluate and run NER students.")
    app.add_typer(re_cmd.app, name="re", help="Train, evaluate and run relation-extraction students.")
    app.add_typer(synth.app, name="synth", help="Generate annotated data with a teacher LLM and review it.")
    app.add_typer(teacher.app, name="teacher", help="Use a teacher LLM directly (zero-shot tagging).")
    app.add_typer(distill.app, name="distill", help="The whole teacher-to-student recipe.")
    app.add_typer(merge.app, name="merge",
                  help="Merge models (chat vector, task arithmetic, TIES, DARE, SLERP); 'merge CONFIG' runs a config.")
    app.add_typer(fractal.app, name="fractal", help="FRACTAL: sentence scores learned from response-level labels.")
    app.add_typer(lm.app, name="lm", help="Continual pretraining and SFT of causal LMs: prepare, train, evaluate.")
    app.add_typer(model.app, name="model", help="Bring model files into adaptlab (GGUF -> HF directory).")
    app.add_typer(domain_instruct.app, name="domain-instruct",
                  help="A domain instruct model without instruction data: CPT, chat vector, evaluation.")
    app.command("extract")(extract.extract)
    app.command("demo")(demo.demo)


def _quiet_libraries(debug: bool) -> None:
    """Keep library chatter (weight-loading reports, per-file progress bars) out of the CLI output.

    The training progress bar with its ETA stays; ``--debug`` or explicit environment settings
    bring the rest back. Set before transformers is imported, which reads them once.
    """
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: user errors print one message and exit 2."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    _quiet_libraries(debug)
    _register()
    try:
        app(args=argv, standalone_mode=False)
    except AdaptlabError as exc:
        if debug:
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        return 130
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return 0


def run() -> None:
    sys.exit(main())
