"""Run directories, atomic writes, seeding and logging.

Every command that trains or evaluates leaves a run directory (``runs/<time>-<name>/`` unless an
explicit path is given) holding ``config.yaml``, ``metrics.json``, ``report.html``, ``log.txt`` and
its artefacts. A run directory is created exclusively: an existing one is never reused or
overwritten. Files inside it are written to a temporary name and renamed when complete, so an
interrupted run never leaves a truncated file behind.

A command that fails or is interrupted removes the run directories it created (:func:`unfinished_runs_removed`,
around every CLI command), so the same command can run again to the same ``--output``; a run that can be
continued says so with :func:`keep_on_failure` and stays. A run whose directory others load as a whole (a merged
model) is opened with ``atomic=True``: it is assembled beside its place and appears there only when finished.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adaptlab import __version__, interrupts
from adaptlab.errors import RunDirError

LOGGER_NAME = "adaptlab"
_created: list[RunDir] = []  # this command's new run directories (see unfinished_runs_removed)
_kept: dict[Path, str] = {}
_open_logs: list[Path] = []  # the log files of the runs whose open_run block is running, innermost last


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; honour the umask like open()
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def partial_dir(output: Path) -> Path:
    """Where ``output`` is assembled before it is renamed into place: ``.NAME.partial-PID`` beside it.

    Partial directories of processes that no longer run (killed with SIGKILL, or by a power cut) are removed
    first, so they never pile up next to the output.
    """
    for stale in output.parent.glob(f".{output.name}.partial-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _process_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)
    return output.parent / f".{output.name}.partial-{os.getpid()}"


def completed_path(path: Path) -> Path:
    """Where a directory assembled in :func:`partial_dir` will be once renamed; any other path as it is."""
    name, marker, pid = path.name.rpartition(".partial-")
    return path.parent / name[1:] if marker and name.startswith(".") and pid.isdigit() else path


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it runs, as another user
        pass
    return True


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON; NaN and ±Inf become null, so the file is valid JSON for every reader."""
    text = json.dumps(finite_or_null(obj), indent=2, ensure_ascii=False, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def atomic_write_jsonl(path: str | Path, rows: Any) -> Path:
    """One JSON object per line (UTF-8, non-ASCII kept), written atomically."""
    return atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def finite_or_null(obj: Any) -> Any:
    """``obj`` with every float that is NaN or ±Inf (in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_null(value) for value in obj]
    return obj


def refuse_existing(path: str | Path, what: str = "output") -> Path:
    """Return ``path`` if nothing is there yet (or it is an empty directory) and it can be written, else raise.

    Called before the work starts, so that an output that cannot be written fails at once, not after it.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RunDirError(
            f"{what} {path} already exists; adaptlab never overwrites a run. "
            "Choose another path or remove it yourself."
        )
    folder = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if folder != path.absolute() and not folder.is_dir():
        raise RunDirError(f"{what} {path}: {folder} is a file, so nothing can be written below it")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise RunDirError(f"{what} {path}: cannot write in {folder} (permission denied)")
    return path


@dataclass
class RunDir:
    """A created run directory and the conventional paths inside it."""

    path: Path
    finished: bool = False

    def finish(self, metrics: dict[str, Any], title: str, sections: Sequence[Any] = ()) -> None:
        """Write ``metrics.json``, ``report.html`` and a model card (``README.md``) in every model directory of the
        run (:mod:`adaptlab.models.card`), atomically: the run's results are complete."""
        from adaptlab.models.card import write_model_cards
        from adaptlab.report.html import write_report

        atomic_write_json(self.metrics, metrics)
        write_report(self.report, title, sections)
        write_model_cards(self.path, metrics, title)
        self.finished = True
        get_logger().info("results written: %s, %s", self.metrics.name, self.report.name)

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.json"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    @property
    def log(self) -> Path:
        return self.path / "log.txt"

    @property
    def model(self) -> Path:
        return self.path / "model"


def create_run_dir(output: str | Path | None, name: str, root: str | Path = "runs") -> RunDir:
    """Create a fresh run directory and attach a log file handler to the adaptlab logger.

    With ``output`` given, that exact directory is used (it must not exist or be empty); otherwise
    ``<root>/<YYYYmmdd-HHMMSS>-<name>`` with a numeric suffix if that name is taken.
    """
    if output is not None:
        path = refuse_existing(output, "run directory")
        path.mkdir(parents=True, exist_ok=True)
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(root) / f"{stamp}-{name}"
        path, n = base, 1
        while True:
            try:
                path.mkdir(parents=True, exist_ok=False)
                break
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
    run = RunDir(path)
    attach_log_file(run.log)
    _created.append(run)
    return run


@contextmanager
def assembled(output: Path) -> Iterator[Path]:
    """A directory built in a partial directory beside ``output`` (:func:`partial_dir`) and renamed to ``output``
    when the block completes, so nothing half-written ever sits where the complete one belongs.

    On a failure or an interrupt the partial directory is removed (one left by a killed process is removed by the
    next run); an OSError (a full disk, a read-only folder) becomes a :class:`RunDirError` that says so.
    """
    temporary = partial_dir(output)
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    interrupts.note(f"nothing is written to {output} until it is complete; its partial files are removed")
    try:
        yield temporary
        os.rename(temporary, output)
    except OSError as exc:
        shutil.rmtree(temporary, ignore_errors=True)
        raise RunDirError(f"writing {output} failed ({exc}); nothing was left there") from exc
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


@contextmanager
def open_run(output: str | Path | None, name: str, config: Any, existing: RunDir | None = None, *,
             atomic: bool = False) -> Iterator[RunDir]:
    """The life of one command's run directory: every command that leaves a run goes through here.

    Creates the directory (:func:`create_run_dir`; or continues ``existing``, a run being resumed), writes the
    resolved ``config.yaml`` (a pydantic config; a resumed run keeps its own) and sends the log to ``log.txt``.
    The command writes its artefacts and ends with :meth:`RunDir.finish` (metrics and report, atomically); a
    command that leaves the block without doing so is a bug, reported as one. A failure inside the block leaves
    the directory to :func:`unfinished_runs_removed`, which removes it unless it was marked with
    :func:`keep_on_failure`.

    ``atomic=True`` (an explicit ``output`` only): the directory is assembled beside ``output``
    (:func:`assembled`) and renamed into place when the block completes, for a run directory that others load as
    a whole, such as a merged model; ``run.path`` is the partial directory inside the block, ``output`` after
    it, and a failure inside the block removes the partial directory at once (it can never be continued).
    """
    if atomic and (output is None or existing is not None):
        raise ValueError("an atomic run is a new run with an explicit output directory")
    final = refuse_existing(output, "run directory") if atomic else None
    parent_logs = list(_open_logs[-1:])
    with ExitStack() as stack:
        if parent_logs:  # a run inside another run's block: the outer log goes on when this one ends
            stack.callback(attach_log_file, parent_logs[0])
        if existing is not None:
            run = existing
            attach_log_file(run.log)
        elif final is not None:
            run = RunDir(stack.enter_context(assembled(final)))
            attach_log_file(run.log)
            stack.callback(detach_log_file, run.log)  # before the rename, and before a failed one is removed
        else:
            run = create_run_dir(output, name)
        if existing is None:
            from adaptlab.config import save_config

            save_config(config, run.config)
        get_logger().info("adaptlab %s: %s in %s", __version__, name, final or run.path)
        _open_logs.append(run.log)
        stack.callback(_open_logs.pop)
        yield run
        if not run.finished:
            raise RuntimeError(f"the command ended without writing the results of its run directory {run.path}")
    if final is not None and not parent_logs:
        run.path = final
        attach_log_file(run.log)  # the log goes on where the run now is
    elif final is not None:
        run.path = final


def keep_on_failure(run: RunDir, how_to_continue: str) -> None:
    """Keep ``run`` if the command fails or is interrupted from here on; ``how_to_continue`` is told the user."""
    _kept[run.path.resolve()] = how_to_continue


@contextmanager
def unfinished_runs_removed() -> Iterator[None]:
    """Around one command: if it fails or is interrupted, every run directory it created is removed (newest
    first), but for those marked with :func:`keep_on_failure` and those holding one; a note says what happened."""
    _created.clear()
    _kept.clear()
    try:
        yield
    except BaseException:
        for run in reversed(_created):
            path = run.path.resolve()
            how_to_continue = _kept.get(path)
            if how_to_continue is not None:
                interrupts.note(f"kept {run.path}: {how_to_continue}")
            elif run.path.exists() and not any(path in kept.parents for kept in _kept):
                detach_log_file(run.log)
                shutil.rmtree(run.path, ignore_errors=True)
                interrupts.note(f"removed the unfinished run directory {run.path}; the same command can run again")
        raise
    finally:
        _created.clear()
        _kept.clear()


def get_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    return logger


def detach_log_file(path: Path) -> None:
    """Stop writing adaptlab log records to ``path``."""
    logger = get_logger()
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) == path.resolve():
            logger.removeHandler(handler)
            handler.close()


def attach_log_file(path: Path) -> None:
    """Send adaptlab log records to ``path`` (replacing any file handler of an earlier run)."""
    logger = get_logger()
    for handler in list(logger.handlers):
        if isinstance(handler, logging.FileHandler):
            logger.removeHandler(handler)
            handler.close()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


def user_cache_dir() -> Path:
    """adaptlab's cache folder: ``$ADAPTLAB_CACHE_DIR``, else ``$XDG_CACHE_HOME/adaptlab`` or ``~/.cache/adaptlab``."""
    root = os.environ.get("ADAPTLAB_CACHE_DIR")
    if root:
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "adaptlab"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) for reproducible runs."""
    random.seed(seed)
    import numpy as np
    import torch

    np.random.seed(seed)
    torch.manual_seed(seed)


_console = {"progress": True}


class _ConsoleLogHandler(logging.StreamHandler):
    """adaptlab's log records on stderr as ``warning: ...`` lines.

    The stream is looked up for every record, so a replaced ``sys.stderr`` (a redirect, pytest's capture) gets them.
    """

    def __init__(self, level: int) -> None:
        super().__init__()
        self.setLevel(level)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {record.getMessage()}"


def configure_console(quiet: bool = False, verbose: bool = False) -> None:
    """The CLI's ``-q`` / ``-v`` for this process: which log records reach the console, and whether bars are drawn.

    Default: adaptlab's warnings and errors on stderr, progress bars on (every record from info up also goes to
    the run's ``log.txt``). ``quiet``: the same records, and no progress bar at all (tqdm's too, through
    ``TQDM_DISABLE``, which tqdm reads when it is imported). ``verbose``: debug and info records too, on stderr and
    in ``log.txt``.
    """
    logger = get_logger()
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleLogHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(_ConsoleLogHandler(logging.DEBUG if verbose else logging.WARNING))
    _console["progress"] = not quiet
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"


def progress_enabled(requested: bool = True) -> bool:
    """Whether to draw a progress bar that a config asks for (``requested``): never under ``adaptlab -q``."""
    return requested and _console["progress"]


def progress_bar(enabled: bool = True, fields: str | None = None):
    """A rich progress bar on stderr: description, bar, done/total, ``fields``, elapsed, ETA; ``enabled=False``
    shows nothing. adaptlab's one bar style (training stages, teacher requests, FRACTAL, merges, LM evaluation).

    ``fields`` is a rich format string over each task's own fields (``"cached {task.fields[hits]}"``; every task of
    the bar sets them with ``add_task(..., hits=0)``), shown after the count. A line that does not fit the console
    is shortened, never wrapped; written to a file (no terminal) a bar is printed once, when it stops. ``adaptlab
    -q`` turns every bar off (:func:`progress_enabled`).
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    extra = [TextColumn(fields, markup=False)] if fields else []
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *extra,
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True),
                    disable=not progress_enabled(enabled))


@contextmanager
def datasets_progress(enabled: bool) -> Iterator[None]:
    """datasets' own tqdm bars ("Map", "Saving the dataset") on or off for a block, as they were after it; never on
    under ``adaptlab -q``. Off where adaptlab draws its own bar for the same work (:func:`progress_bar`)."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if progress_enabled(enabled) else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was_enabled else datasets.disable_progress_bars)()
