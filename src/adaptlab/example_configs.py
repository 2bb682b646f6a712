"""The example configs shipped inside the package (``resources/configs``): list, find, copy.

They are the only copy: ``adaptlab config cp NAME DEST`` puts one where a user can edit it (torchtune's
``tune cp``), and every command's CONFIG argument also takes a NAME, so ``adaptlab lm train lm_sft data=...``
runs the example as it is. A NAME is the path below ``resources/configs`` without its suffix
(``ner``, ``accelerate/ddp``); a folder (``accelerate``) is a NAME too and is copied whole.
"""

from __future__ import annotations

import difflib
import shutil
from importlib.resources import files
from pathlib import Path

from adaptlab.errors import ConfigError
from adaptlab.runs import atomic_write_bytes, partial_dir, refuse_existing

SUFFIXES = (".yaml", ".json")


def root() -> Path:
    return Path(str(files("adaptlab") / "resources" / "configs"))


def names() -> list[str]:
    """Every shipped file's and folder's NAME, sorted (``accelerate``, ``accelerate/ddp``, ..., ``ner``, ...)."""
    base = root()
    return sorted(str(p.relative_to(base).with_suffix("")) for p in base.rglob("*")
                  if p.suffix in SUFFIXES or p.is_dir() and p.name != "__pycache__")


def find(name: str) -> Path | None:
    """The shipped file or folder called ``name`` (a suffix is allowed: ``ner.yaml``), else None."""
    if not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    candidate = root() / name
    for path in (candidate, *(candidate.with_name(candidate.name + s) for s in SUFFIXES)):
        if path.exists() and (path.is_dir() or path.suffix in SUFFIXES):
            return path
    return None


def path(name: str) -> Path:
    """The shipped file or folder ``name``; an unknown name is a ConfigError that lists the known ones."""
    found = find(name)
    if found is None:
        known = names()
        close = difflib.get_close_matches(name, known, n=1)
        guess = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"no shipped config named {name!r}{guess}; the shipped configs are: {', '.join(known)}")
    return found


def copy(name: str, dest: str | Path) -> Path:
    """Copy the shipped ``name`` to ``dest`` (into it, when ``dest`` is a folder, as ``cp`` does); never overwrites.

    A file is written atomically; a folder is assembled under a partial name beside its target and renamed
    into place, so an interrupted copy leaves nothing that looks finished.
    """
    source = path(name)
    target = Path(dest)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise ConfigError(f"destination {target} already exists; adaptlab config cp never overwrites it. "
                          "Choose another path or remove it yourself.")
    refuse_existing(target, "destination")  # a file in the way of its folder, or no permission to write there
    if source.is_file():
        return atomic_write_bytes(target, source.read_bytes())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = partial_dir(target)
    try:
        shutil.copytree(source, staging, ignore=shutil.ignore_patterns("__pycache__"))
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
