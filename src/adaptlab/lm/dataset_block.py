"""The ``dataset:`` block of ``lm train``: where the training data is, what shape it has, which columns are which.

The idea of LLaMA-Factory's ``dataset_info.json`` and axolotl's ``type:``: the user says what the data is instead
of converting it first::

    dataset:
      path: data/qa.csv                  # a file, a save_to_disk folder, or a hub dataset name
      format: alpaca                     # auto | messages | sharegpt | alpaca | prompt_completion | text
      columns: {instruction: question, output: answer}   # the format's field -> this data's column

Sources, by what ``path`` is:

* a local file, by suffix: ``.jsonl`` (one record per line; the line numbers name problems), ``.json`` (a list of
  records or ``{"data": [...]}``; JSONL content is read as such), ``.csv`` / ``.tsv`` (a header row; cells are
  text, list fields as JSON) or ``.parquet`` (pyarrow);
* a folder written by ``datasets``' ``save_to_disk`` (``load_from_disk``; a ``DatasetDict`` takes ``split``,
  default ``train`` or its only split);
* anything else is a hub dataset name for ``datasets.load_dataset(path, subset, split=split)``. That needs the
  network: with ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE``) it is a one-line error saying so, before any
  download is tried; save the dataset with ``save_to_disk`` and name the folder instead.

The shapes and what becomes of them are in :mod:`adaptlab.lm.sft_formats`. A ``columns`` entry naming a column
the data does not have is an error that names the key and the columns there are, before any record is read;
a record that lacks a field names its file:line (``file row N`` for sources without lines). ``split`` on a local
file is an error, not ignored. The old ``data: FILE`` of mode sft is the block ``{path: FILE}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, model_validator

from adaptlab.config import StrictModel
from adaptlab.data.formats.hf import is_saved_dataset
from adaptlab.data.records import iter_json_lines, iter_table_rows, read_text_lines
from adaptlab.errors import ConfigError, DataError
from adaptlab.lm.sft_examples import SFTExample, Where, parse_example
from adaptlab.lm.sft_formats import FIELDS, ROLE_TARGETS, detect_format, to_example, to_text

SUFFIXES = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
Record = tuple[Where, dict[str, Any]]
T = TypeVar("T")


class DatasetBlock(StrictModel):
    """One dataset of ``lm train``: a source, its shape and its column names (module docstring).

    A plain string is the block ``{path: STRING}``."""

    path: str = Field(min_length=1, description="a local .jsonl/.json/.csv/.tsv/.parquet file, a folder written by "
                                                "datasets' save_to_disk, or a hub dataset name (needs the network)")
    format: Literal["auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text"] = Field(
        "auto", description="messages | sharegpt | alpaca | prompt_completion | text (cpt); auto: per record, "
                            "by its fields")
    columns: dict[str, str] = Field(default_factory=dict, description="the format's field names -> this data's "
                                    "column names, e.g. {instruction: question, output: answer}")
    roles: dict[str, str] = Field(default_factory=dict, description="sharegpt: more 'from' values and the role "
                                  "each stands for (system, user, assistant, tool, function_call), e.g. {bot: gpt}")
    split: str | None = Field(None, description="save_to_disk folders and hub datasets: the split (default: train, "
                                                "or the only one)")
    subset: str | None = Field(None, description="hub datasets: the configuration (subset) name")

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _known_names(self) -> DatasetBlock:
        fields = FIELDS.get(self.format) or tuple(dict.fromkeys(f for names in FIELDS.values() for f in names))
        unknown = [name for name in self.columns if name not in fields]
        if unknown:
            raise ValueError(f"columns: {', '.join(map(repr, unknown))} is not a field of format {self.format} "
                             f"(its fields: {', '.join(fields)}); columns maps the format's fields to your columns")
        wrong = {name: role for name, role in self.roles.items() if role not in ROLE_TARGETS}
        if wrong:
            raise ValueError(f"roles: {wrong} maps to no role; map each 'from' value to one of {list(ROLE_TARGETS)}")
        return self


# ------------------------------------------------------------------------------------------------ sources


def load_records(block: DatasetBlock, key: str) -> list[Record]:
    """``[(where, record), ...]`` with ``columns`` applied (module docstring); ``key`` names the block."""
    path = Path(block.path).expanduser()
    if path.is_dir():
        source, columns, records = _saved_dataset(path, block, key)
    elif path.exists():
        if block.split is not None:
            raise ConfigError(f"{key}.split: {path} is a file; split is for save_to_disk folders and hub datasets")
        source, columns, records = str(path), *_file(path)
    elif path.suffix.lower() in SUFFIXES or block.path.startswith(("/", ".", "~")):
        raise DataError("file not found", path)
    else:
        source, columns, records = _hub(block)
    if not records:
        raise DataError("holds no records" + (f"; check {key}.split" if block.split else ""), source)
    missing = [(field, column) for field, column in block.columns.items() if column not in columns]
    if missing:
        raise DataError("; ".join(f"{key}.columns.{field}: there is no column {column!r}" for field, column in missing)
                        + f" (the columns are {', '.join(columns) or 'none'})", source)
    renamed = {column: field for field, column in block.columns.items()}
    return [(where, _rename(record, renamed)) for where, record in records]


def _rename(record: Any, renamed: dict[str, str]) -> Any:
    """The record with each mapped column under its field name; a mapped column wins over one of that name."""
    if not isinstance(record, dict) or not renamed:
        return record
    fields = set(renamed.values())
    out = {name: value for name, value in record.items() if name not in renamed and name not in fields}
    out.update({renamed[name]: value for name, value in record.items() if name in renamed})
    return out


def _columns(records: list[Record]) -> list[str]:
    return list(dict.fromkeys(name for _, record in records if isinstance(record, dict) for name in record))


def _file(path: Path) -> tuple[list[str], list[Record]]:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"unknown file type {path.suffix or '(none)'!r}; SFT data is a "
                        f"{', '.join(SUFFIXES)} file, a save_to_disk folder or a hub dataset name", path)
    if kind in ("csv", "tsv"):
        rows = iter_table_rows(path, "," if kind == "csv" else "\t")
        records: list[Record] = [((path, line), row) for line, row in rows]
        return (list(records[0][1]) if records else []), records
    if kind == "parquet":
        import pyarrow.parquet

        try:
            table = pyarrow.parquet.read_table(path)
        except Exception as exc:  # pyarrow's ArrowInvalid / OSError for a truncated or foreign file
            raise DataError(f"cannot read as Parquet ({exc})", path) from None
        return table.column_names, _numbered(path, table.to_pylist())
    data = _json_list(path) if kind == "json" else None
    records = _numbered(path, data) if data is not None else [((path, line), obj)
                                                               for line, obj in iter_json_lines(path)]
    return _columns(records), records


def _json_list(path: Path) -> list[Any] | None:
    """The records of a JSON file: a list, or ``{"data": [...]}``; None when it holds JSONL instead."""
    try:
        data = json.loads("\n".join(read_text_lines(path)))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # one object per line under a .json name
            return None
        raise DataError(f"invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})", path) from None
    data = data.get("data") if isinstance(data, dict) else data
    if not isinstance(data, list):
        raise DataError('a JSON file holds a list of records or {"data": [...]}', path)
    return data


def _numbered(source: Path | str, rows: list[Any]) -> list[Record]:
    return [((f"{source} row {n}", None), row) for n, row in enumerate(rows, start=1)]


def _saved_dataset(path: Path, block: DatasetBlock, key: str) -> tuple[str, list[str], list[Record]]:
    import datasets

    if not is_saved_dataset(path):
        raise DataError("is a folder but not one written by datasets' save_to_disk; the data is a file, such a "
                        "folder or a hub dataset name (a prepared corpus goes to mode cpt's data:)", path)
    loaded = datasets.load_from_disk(str(path))
    return str(path), *_split_rows(loaded, block.split, key, str(path))


def _split_rows(loaded: Any, split: str | None, key: str, source: str) -> tuple[list[str], list[Record]]:
    import datasets

    if isinstance(loaded, datasets.DatasetDict):
        name = split or ("train" if "train" in loaded or len(loaded) != 1 else next(iter(loaded)))
        if name not in loaded:
            raise DataError(f"has no split {name!r} (its splits: {', '.join(loaded)}); set {key}.split", source)
        loaded = loaded[name]
    elif split is not None:
        raise ConfigError(f"{key}.split: {source} holds a single Dataset, not splits; remove split")
    return loaded.column_names, _numbered(source, loaded.to_list())


def hub_offline() -> str | None:
    """The environment variable that turns hub downloads off, if one does (read now, not at import)."""
    return next((name for name in OFFLINE_VARIABLES
                 if os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE")), None)


def _hub(block: DatasetBlock) -> tuple[str, list[str], list[Record]]:
    name = block.path
    offline = hub_offline()
    if offline:
        raise DataError(f"{name!r} is not a local file or folder, and hub downloads are off "
                        f"({offline}=1); save the dataset with save_to_disk and give its folder")
    import datasets

    try:
        loaded = datasets.load_dataset(name, block.subset, split=block.split or "train")
    except Exception as exc:  # the hub client and the builders raise many kinds; all mean "not available"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{name!r} is not a local file or folder, and loading it from the hub failed: "
                        f"{first}") from None
    source = f"{name}[{block.split or 'train'}]"
    return source, loaded.column_names, _numbered(source, loaded.to_list())


# ------------------------------------------------------------------------------------------------ reading


def read_sft_examples(block: DatasetBlock, key: str = "dataset") -> list[SFTExample]:
    """Every record of the block as a validated SFT example (a conversation or a prompt and completion)."""
    if block.format == "text":
        raise ConfigError(f"{key}.format: text is plain text for mode cpt; SFT needs messages, sharegpt, alpaca or "
                          "prompt_completion records")

    def example(where: Where, record: dict[str, Any]) -> SFTExample:
        fmt = block.format if block.format != "auto" else detect_format(record)
        if fmt == "text":
            raise ValueError(f"a plain 'text' record has no response to learn; text trains in mode cpt (or map its "
                             f"columns onto a format's fields with {key}.columns)")
        return parse_example(to_example(record, fmt, block.roles, key), where)

    return _each_record(load_records(block, key), example)


def read_texts(block: DatasetBlock, key: str = "dataset") -> list[str]:
    """The documents of a ``text`` block (``auto``: every record needs a ``text`` field), for mode cpt."""
    if block.format not in ("auto", "text"):
        raise ConfigError(f"{key}.format: mode cpt trains on plain text (format: text, or auto); {block.format} "
                          "examples are for mode sft")
    return _each_record(load_records(block, key), lambda where, record: to_text(record, key))


def _each_record(records: list[Record], convert: Callable[[Where, dict[str, Any]], T]) -> list[T]:
    """``convert`` of every record; a ValueError becomes a DataError naming the record's file:line."""
    converted = []
    for where, record in records:
        try:
            if not isinstance(record, dict):
                raise ValueError(f"expected a record (a JSON object), got {type(record).__name__}")
            converted.append(convert(where, record))
        except ValueError as exc:
            raise DataError(str(exc), *where) from None
    return converted
