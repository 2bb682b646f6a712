"""``adaptlab data inspect|convert``: look at a messy annotated file, repair it, convert it.

Without a schema only the generic line repairs and checks run; ``--preset NAME`` or ``--schema FILE``
names the annotation schema whose relation verbs turn on the clause rules (see :mod:`adaptlab.data.repair`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from adaptlab.cli.common import (
    WithOldArguments,
    console,
    json_option,
    old_argument,
    output_option,
    print_json,
    schema_option,
)

app = typer.Typer(no_args_is_help=True)

CONLL_SUFFIXES = {".conll", ".conllu", ".bio", ".iob", ".tsv", ".txt"}
TYPES_HELP = "entity types, comma-separated (default: inferred from the tags)"
FIRST_SECTION_HELP = "name for the sequences before the first section header (meta.section)"
PRESET_HELP = "a shipped schema whose clause rules apply (biospecies); default: generic line repairs only"
SCHEMA_HELP = "YAML file with a schema: section whose relation verbs turn on the clause rules"
NO_CLAUSE_RULES = "clause rules: off (no schema; --preset NAME or --schema FILE turns them on)"


def _types(value: Optional[str]) -> Optional[list[str]]:
    return [t.strip() for t in value.split(",") if t.strip()] if value else None


def _preset_option() -> Optional[str]:
    return typer.Option(None, "--preset", help=PRESET_HELP, show_default=False)


def _grammar(preset: Optional[str], schema: Optional[str]):
    """The clause grammar of ``--preset`` or ``--schema`` (None with neither); a ConfigError for both, an
    unknown preset, or a schema whose relations name no verbs."""
    from adaptlab.errors import ConfigError
    from adaptlab.synth.schema import preset_schema, resolve_schema

    if preset and schema:
        raise ConfigError("--preset and --schema both name a schema; give one")
    if not preset and not schema:
        return None
    grammar = (preset_schema(preset) if preset else resolve_schema(schema)).clause_grammar()
    if grammar is None:
        raise ConfigError(f"schema {preset or schema!r}: no relation names its verbs (verbs: [live, lives]), so "
                          "there are no clause rules; add them, or leave the schema out for the line repairs only")
    return grammar


@app.command()
def inspect(
    path: str = typer.Argument(..., help="CoNLL-like file (token and tag per line)"),
    as_json: bool = json_option("print the report as JSON on stdout"),
    examples: int = typer.Option(5, "--examples", min=0, help="examples (file:line) shown per problem"),
    types: Optional[str] = typer.Option(None, "--types", help=TYPES_HELP),
    first_section: Optional[str] = typer.Option(None, "--first-section", help=FIRST_SECTION_HELP),
    preset: Optional[str] = _preset_option(),
    schema: Optional[str] = schema_option(SCHEMA_HELP),
) -> None:
    """Count records, tokens and labels and list every problem with file:line examples."""
    from adaptlab.data.inspect import inspect_file

    grammar = _grammar(preset, schema)
    report = inspect_file(path, examples=examples, types=_types(types), first_section=first_section,
                          grammar=grammar)
    if as_json:
        print_json(report.to_json())
        return
    data = report.to_json()
    summary = Table(title=f"{path}", show_header=False)
    summary.add_column("what")
    summary.add_column("value")
    summary.add_row("records (sequences)", str(data["records"]))
    summary.add_row("tokens (words / lines)", f"{data['tokens']} / {data['token_lines']}")
    summary.add_row("entity types", ", ".join(data["types"]) or "(none)")
    summary.add_row("sections", ", ".join(f"{k} {v}" for k, v in data["sections"].items()))
    if data["clauses"] is None:
        summary.add_row("clauses", NO_CLAUSE_RULES)
    else:
        conventions = ", ".join(f"{k} {v}" for k, v in data["clause_conventions"].items())
        summary.add_row("clauses (by preposition convention)", f"{data['clauses']} ({conventions})")
    console.print(summary)
    labels = Table(title="labels")
    for column in ("type", "spans", "tokens"):
        labels.add_column(column, justify="left" if column == "type" else "right")
    for typ, n in data["labels"]["entity_types"].items():
        labels.add_row(typ, str(n), str(data["labels"]["token_types"].get(typ, 0)))
    console.print(labels)
    console.print("raw tags: " + ", ".join(f"{t} {n}" for t, n in data["labels"]["raw_tags"].items()))
    problems = Table(title="problems")
    problems.add_column("kind")
    problems.add_column("count", justify="right")
    problems.add_column("first examples (file:line: excerpt)", overflow="fold")
    for kind, entry in data["problems"].items():
        problems.add_row(kind, str(entry["count"]), "\n".join(entry["examples"]) or entry["description"])
    console.print(problems if data["problems"] else "no problems found")


@app.command(cls=WithOldArguments)
def convert(
    source: str = typer.Argument(..., help="input file (CoNLL-like, JSONL, Label Studio, ...)"),
    target: str = output_option("output file; the format follows the suffix (must not exist)", required=True),
    from_fmt: Optional[str] = typer.Option(None, "--from", help="input format (default: detected)"),
    to_fmt: Optional[str] = typer.Option(None, "--to", help="output format (default: from the suffix)"),
    repair: bool = typer.Option(True, "--repair/--no-repair", help="repair CoNLL-like input"),
    normalise: bool = typer.Option(False, "--normalise-boundaries",
                                   help="one span-boundary convention: punctuation outside spans; with a schema also "
                                        "the preposition outside the object and a parenthesised name in the subject"),
    report_path: Optional[str] = typer.Option(None, "--report", help="write the repair report as JSON here"),
    types: Optional[str] = typer.Option(None, "--types", help=TYPES_HELP),
    first_section: Optional[str] = typer.Option(None, "--first-section", help=FIRST_SECTION_HELP),
    keep_unrepairable: bool = typer.Option(False, "--keep-unrepairable",
                                           help="keep garbled/fragmented sequences instead of dropping them"),
    clauses: bool = typer.Option(False, "--clauses", help="one record per relation clause (needs a schema)"),
    preset: Optional[str] = _preset_option(),
    schema: Optional[str] = schema_option(SCHEMA_HELP),
    _old_target: Optional[str] = old_argument("the output file is an option now: adaptlab data convert SOURCE "
                                              "--output {value}"),
) -> None:
    """Convert between formats; CoNLL-like input is repaired by default (line repairs; the clause rules too with
    --preset or --schema) and the repair summarised."""
    from adaptlab.data import boundary, io
    from adaptlab.data.records import read_text_lines
    from adaptlab.runs import atomic_write_json, refuse_existing

    grammar = _grammar(preset, schema)
    refuse_existing(target, "output")
    if report_path:
        refuse_existing(report_path, "report")
    if not Path(source).is_dir():
        read_text_lines(source)  # a missing or empty input file fails here, naming the file
    fmt = io.resolve_format(from_fmt) if from_fmt else _detect(source)
    report = None
    if fmt == "conll" and repair:
        from adaptlab.data.repair import repair_file

        records, report = repair_file(source, normalise_boundaries=normalise, types=_types(types),
                                      first_section=first_section, drop_unrepairable=not keep_unrepairable,
                                      clause_records=clauses, grammar=grammar)
    else:
        records = io.load_records(source, fmt)
        if normalise:
            records, counts = boundary.normalise_boundaries(records, grammar)
            changes = ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing to change"
            console.print(f"normalised: {changes}")
    written = io.save_records(records, target, to_fmt)
    if report is not None:
        _print_repair(report, grammar is not None)
        if report_path:
            atomic_write_json(report_path, report.to_json())
    console.print(f"wrote {len(records)} records to {written}")


def _detect(source: str) -> str:
    """The input format; a CoNLL-like suffix is trusted even when the first line is messy."""
    from adaptlab.data import io
    from adaptlab.errors import DataError

    try:
        return io.detect_format(source)
    except DataError:
        if Path(source).suffix.lower() in CONLL_SUFFIXES:
            return "conll"
        raise


def _print_repair(report, clause_rules: bool) -> None:
    data = report.to_json()
    table = Table(title="repair rules fired")
    table.add_column("rule")
    table.add_column("count", justify="right")
    for rule, n in data["rules"].items():
        if n:
            table.add_row(rule, str(n))
    console.print(table)
    changes = data["span_changes"]
    if changes:
        kinds = Counter(change["change"] for change in changes)
        console.print(f"spans the rules changed: {', '.join(f'{k} {n}' for k, n in sorted(kinds.items()))}")
        for change in changes[:10]:
            console.print(f"  {change['where']}: {change['rule']} {change['change']} {change['before'] or ''}"
                          f"{' -> ' if change['before'] and change['after'] else ''}{change['after'] or ''}")
        if len(changes) > 10:
            console.print(f"  ... and {len(changes) - 10} more (all are in --report)")
    for item in data["unrepairable_items"][:10]:
        console.print(f"unrepairable ({item['action']}): {item['where']}: {item['kind']}: {item['excerpt']}")
    if len(data["unrepairable_items"]) > 10:
        console.print(f"... and {len(data['unrepairable_items']) - 10} more (all are in --report)")
    tokens = data["tokens"]
    console.print(
        f"records in {data['sequences_in']}, duplicates removed {data['duplicates_removed']}, "
        f"dropped {data['records_dropped']}, records out {data['records_out']}; tokens in {tokens['in']} = "
        f"out {tokens['out']} + duplicates {tokens['in_duplicates']} + dropped {tokens['in_dropped']}"
    )
    if clause_rules:
        conventions = ", ".join(f"{k} {v}" for k, v in data["clause_conventions"].items())
        console.print(f"clauses by preposition convention (after repair): {conventions}")
    else:
        console.print(NO_CLAUSE_RULES)
    if data["normalisation"]:
        console.print("normalised: " + ", ".join(f"{k} {v}" for k, v in data["normalisation"].items()))
