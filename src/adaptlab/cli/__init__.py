"""The ``adaptlab`` command line. Each command group lives in its own module and only parses
arguments, calls a recipe or building block, and prints; no logic lives here.

Global options (``-q``, ``-v``, ``--debug``) may stand anywhere on the command line; they are moved in front of
the group before typer parses it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata

import click
import typer
from rich.console import Console
from rich.markup import escape

from adaptlab import extras, interrupts, runs
from adaptlab.cli.common import click_exceptions, old_option_message
from adaptlab.errors import AdaptlabError

app = typer.Typer(
    name="adaptlab",
    help="Adapt language models to a domain when labelled data is scarce.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts show [E1] markers and [key=value] literally, never as markup
)
err_console = Console(stderr=True, soft_wrap=True)  # one-line errors stay one line
_state = {"debug": False, "registered": False}
GLOBAL_FLAGS = ("-q", "--quiet", "-v", "--verbose", "--debug")
CLICK_ERRORS = (click.ClickException, click_exceptions.ClickException)  # the vendored click and the real one
NO_ARGS_HELP = tuple(getattr(module, "NoArgsIsHelpError", ()) for module in (click.exceptions, click_exceptions))


def version() -> str:
    """The installed distribution's version; the source tree's when adaptlab runs uninstalled."""
    try:
        return metadata.version("adaptlab")
    except metadata.PackageNotFoundError:
        from adaptlab import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        print(f"adaptlab {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="Results, warnings and errors only: no progress bars or status lines."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show adaptlab's debug and info log records too."),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks and library messages for errors."),
    _version: bool = typer.Option(False, "--version", is_eager=True, callback=_print_version,
                                  help="Print adaptlab's version and exit."),
) -> None:
    if quiet and verbose:
        raise click_exceptions.UsageError("-q/--quiet and -v/--verbose exclude each other")
    _state["debug"] = debug
    runs.configure_console(quiet=quiet, verbose=verbose)


def _register() -> None:
    """Add every command group to the app, once per process (tests call :func:`main` many times)."""
    if _state["registered"]:
        return
    _state["registered"] = True
    from adaptlab.cli import (
        cls,
        config_cmd,
        data,
        demo,
        distill,
        domain_instruct,
        export,
        extract,
        fractal,
        lm,
        merge,
        model,
        multitask,
        ner,
        re_cmd,
        synth,
        teacher,
    )

    app.add_typer(config_cmd.app, name="config",
                  help="List, show and copy the shipped example configs; write the config reference.")
    app.add_typer(data.app, name="data", help="Inspect, repair and convert annotated data.")
    app.add_typer(ner.app, name="ner", help="Train, evaluate and run NER students.")
    app.add_typer(re_cmd.app, name="re", help="Train, evaluate and run relation-extraction students.")
    app.add_typer(cls.app, name="cls", help="Train, evaluate and run text classifiers (single- or multi-label).")
    app.add_typer(multitask.app, name="multitask", help="One encoder, a head per task (NER, RE, classification).")
    app.add_typer(synth.app, name="synth", help="Generate annotated data with a teacher LLM and review it.")
    app.add_typer(teacher.app, name="teacher", help="Use a teacher LLM directly (zero-shot tagging).")
    app.add_typer(distill.app, name="distill", help="The whole teacher-to-student recipe.")
    app.add_typer(merge.app, name="merge",
                  help="Merge models (chat vector, task arithmetic, TIES, DARE, SLERP); 'merge CONFIG' runs a config.")
    app.add_typer(fractal.app, name="fractal", help="FRACTAL: sentence scores learned from response-level labels.")
    app.add_typer(lm.app, name="lm", help="Continual pretraining and SFT of causal LMs: prepare, train, evaluate.")
    app.add_typer(model.app, name="model", help="Bring model files into adaptlab (GGUF -> HF directory).")
    app.add_typer(export.app, name="export", help="Export models for other tools (GGUF for llama.cpp and Ollama).")
    app.add_typer(domain_instruct.app, name="domain-instruct",
                  help="A domain instruct model without instruction data: CPT, chat vector, evaluation.")
    app.command("extract")(extract.extract)
    app.command("demo")(demo.demo)


@contextmanager
def _quiet_libraries(debug: bool) -> Iterator[None]:
    """Keep library chatter (weight-loading reports and bars, per-file progress bars) out of the CLI output.

    The training progress bar with its ETA stays; ``--debug`` or explicit environment settings bring the rest
    back. The environment is set before transformers is imported, which reads it once; where it already is (the
    CLI called in-process, from Python or a test), its verbosity and bars are set for the call and restored after.
    """
    if debug:
        yield
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is None:
        yield
        return
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    if os.environ["TRANSFORMERS_VERBOSITY"] == "error":
        hf_logging.set_verbosity_error()
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1":
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; the exit codes are the README's (Exit codes).

    0 done; 2 the input, config or command line is wrong, or the command needs an extra that is not installed
    (one message, no traceback); 1 an internal error (one line pointing to ``--debug``); 128 + signal (130 SIGINT,
    143 SIGTERM) interrupted, with what was kept.
    """
    args = _global_flags_first(sys.argv[1:] if argv is None else [str(a) for a in argv])
    debug = "--debug" in args
    with _quiet_libraries(debug), interrupts.handled_signals():
        _register()  # after the environment is set: the command modules import transformers
        try:
            with runs.unfinished_runs_removed():
                code = _run_app(args)
        except AdaptlabError as exc:
            if debug:
                raise
            _error(str(exc))
            _print_notes()
            return exc.exit_code
        except (typer.Abort, KeyboardInterrupt):
            return _interrupted()
        except typer.Exit as exc:
            return exc.exit_code
        except CLICK_ERRORS as exc:
            return _command_line_error(exc)
        except OSError as exc:  # a path that cannot be written or read, a full disk: the environment, not a bug
            if debug or exc.filename is None and exc.strerror is None:
                raise
            where = f"{exc.filename}: " if exc.filename is not None else ""
            reason = exc.strerror or str(exc)
            if isinstance(exc, FileExistsError) and os.path.isfile(exc.filename or ""):  # mkdir below a file
                reason = "a file is there, so nothing can be written below it"
            _error(f"{where}{reason}. Check the path, its permissions and the free disk space")
            _print_notes()
            return 2
        except Exception as exc:
            if debug:
                raise
            if missing := extras.missing_extra_message(exc):  # an optional package this command needs
                _error(missing)
                _print_notes()
                return 2
            _error(f"internal error ({type(exc).__name__}: {exc}). This is a bug in adaptlab, not in your input; "
                   "run the command again with --debug for the traceback and report it")
            _print_notes()
            return 1
    return code


def _global_flags_first(args: list[str]) -> list[str]:
    """``adaptlab ner train x.yaml -q`` as ``adaptlab -q ner train x.yaml``: the global flags, wherever they stand
    (before a ``--``), go in front, since typer reads them only before the group."""
    end = args.index("--") if "--" in args else len(args)
    flags = [arg for arg in args[:end] if arg in GLOBAL_FLAGS]
    return flags + [arg for arg in args[:end] if arg not in GLOBAL_FLAGS] + args[end:]


def _command_line_error(exc: click.ClickException) -> int:
    """One line for what is wrong and one hint, exit 2; a group called without a command shows its help."""
    if NO_ARGS_HELP and isinstance(exc, NO_ARGS_HELP):
        exc.show()
        return exc.exit_code
    ctx = getattr(exc, "ctx", None)
    message = exc.format_message()
    if isinstance(exc, (click.exceptions.NoSuchOption, click_exceptions.NoSuchOption)):
        message = old_option_message(exc.option_name, ctx) or message
    _error(message)
    command = ctx.command_path if ctx is not None else "adaptlab"
    err_console.print(f"hint: '{escape(command)} --help' shows the arguments and options", highlight=False)
    return 2


def _run_app(args: list[str]) -> int:
    """Run the typer app, turning what it returns instead of raising back into exceptions.

    Without standalone mode typer returns the code of a ``typer.Exit`` and turns KeyboardInterrupt into a
    returned 130; raised again, both are failures that :func:`runs.unfinished_runs_removed` sees. Shell completion
    calls ``sys.exit`` itself; its code is returned like the others.
    """
    try:
        code = app(args=args, prog_name="adaptlab", standalone_mode=False)
    except SystemExit as exc:  # shell completion (--show-completion, the completion requests) exits by itself
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    if code == 130:
        raise KeyboardInterrupt
    if isinstance(code, int) and code != 0:
        raise typer.Exit(code)
    return 0


def _error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)


def _interrupted() -> int:
    """One line for the signal, then what the interrupted work kept or removed and how to go on."""
    err_console.print(f"interrupted ({interrupts.received_signal().name})", highlight=False)
    _print_notes()
    return interrupts.exit_code()


def _print_notes() -> None:
    for line in interrupts.notes():
        err_console.print(escape(line), highlight=False)


def run() -> None:
    sys.exit(main())
