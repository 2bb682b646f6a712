"""``adaptlab extract``: raw text -> NER spans -> relations -> triples."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import console, output_option, print_json, schema_option, texts_option, texts_or_file


def extract(
    ner: str = typer.Option(..., "--ner", help="NER run or model directory"),
    re_model: Optional[str] = typer.Option(None, "--re", help="RE run or model directory (else type rules)"),
    texts: Optional[list[str]] = texts_option(),
    input_file: Optional[str] = typer.Option(None, "--input", help="JSONL records or one text per line"),
    gold: Optional[str] = typer.Option(None, "--gold", help="gold records: tag their texts, print triple F1"),
    output: Optional[str] = output_option("write records with relations here (must not exist)"),
    schema: Optional[str] = schema_option("the schema of the triples: a preset name (biospecies) or a YAML file with "
                                          "a schema: section; its subject heads them, its relations type them"),
) -> None:
    """Extract (subject, relation, argument) triples from raw text."""
    from adaptlab.data.io import load_records
    from adaptlab.data.texts import read_texts
    from adaptlab.errors import ConfigError
    from adaptlab.recipes import relations
    from adaptlab.synth.schema import resolve_schema

    if not schema:
        raise ConfigError("extract needs the schema of its triples: --schema biospecies (a preset) or --schema FILE "
                          "(a YAML file with a schema: section)")
    resolved = resolve_schema(schema)

    gold_records = load_records(gold) if gold else None
    if gold_records:
        texts = [r.text for r in gold_records]
    else:
        texts = texts_or_file(texts, input_file, lambda path: read_texts(path, None))
    records = relations.extract_triples(ner, re_model, texts, output, resolved)
    if gold_records:
        print_json(relations.score_triples(records, gold_records, resolved))
        return
    if output:
        console.print(f"wrote {len(records)} records to {output}")
        return
    for record in records:
        for rel in record.relations:
            head, tail = record.spans[rel.head], record.spans[rel.tail]
            print(f"{record.span_text(head)}\t{rel.label}\t{record.span_text(tail)}")
