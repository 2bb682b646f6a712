"""``adaptlab synth generate | review export | review import | factcheck export | factcheck score``."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import (
    config_argument,
    console,
    json_option,
    output_option,
    overrides_argument,
    print_json,
    print_stage_accounting,
    resolve_config,
)

app = typer.Typer(no_args_is_help=True)


@app.command()
def generate(
    config: Optional[str] = config_argument("YAML config file, or a shipped one's name (e.g. synth_biospecies)"),
    overrides: Optional[list[str]] = overrides_argument(),
    output: Optional[str] = output_option(),
    record: Optional[str] = typer.Option(None, "--record", help="also write every answer to this cassette"),
) -> None:
    """Ask the teacher for annotated sentences; writes records.jsonl, rejects.jsonl and a report."""
    from adaptlab.config import load_config
    from adaptlab.recipes import synth
    from adaptlab.synth.config import SynthConfig

    config, overrides = resolve_config(config, overrides)
    flags = {"output": output}
    if record:
        flags |= {"teacher.record": True, "teacher.cassette": record}
    cfg = load_config(SynthConfig, config, overrides, flags)
    run, metrics = synth.generate(cfg)
    print_stage_accounting({stage: metrics[stage] for stage in synth.STAGES})
    runner = metrics["runner"]
    console.print(f"teacher: {runner['sent']} sent, {runner['cache_hits']} from cache, {runner['retries']} retries, "
                  f"{runner['prompt_tokens'] + runner['completion_tokens']} tokens, ${runner['cost_usd']:.4f}; "
                  f"{runner['schema_valid']}/{runner['schema_answers']} answers schema-valid "
                  f"({runner['schema_ignored']} ignored the schema)")
    console.print(f"run directory: {run.path}")


review_app = typer.Typer(no_args_is_help=True, help="Verify teacher annotations in Label Studio.")
factcheck_app = typer.Typer(no_args_is_help=True, help="Check the teacher's facts on a sample, per aspect.")
app.add_typer(review_app, name="review")
app.add_typer(factcheck_app, name="factcheck")
SCHEMA_HELP = "generation config or run directory (for the schema); default: the records' run directory"


@review_app.command("export")
def review_export(
    records: str = typer.Argument(..., help="generation run directory or records file"),
    output: str = output_option("folder for tasks.json, labeling_config.xml, instructions.txt", required=True),
    schema: Optional[str] = typer.Option(None, "--schema", help=SCHEMA_HELP),
    model_version: Optional[str] = typer.Option(None, "--model-version", help="default: each record's teacher"),
) -> None:
    """Write Label Studio tasks with the teacher's spans and relations as predictions."""
    from adaptlab.recipes import review

    counts = review.export(records, schema or records, output, model_version)
    console.print(f"{counts['tasks']} tasks ({counts['spans']} spans, {counts['relations']} relations) in {output}; "
                  "see instructions.txt")


@review_app.command("import")
def review_import(
    export: str = typer.Argument(..., help="Label Studio JSON export of the review project"),
    schema: str = typer.Option(..., "--schema", help="generation config or run directory"),
    output: Optional[str] = output_option(),
    verified_only: bool = typer.Option(False, "--verified-only", help="drop tasks nobody reviewed"),
) -> None:
    """Read reviewed tasks back: verified flag, edits kept, rejected removed; teacher agreement per type."""
    from adaptlab.recipes import review

    run, result = review.import_(export, schema, output, verified_only)
    counts = result.counts
    console.print(f"{counts['tasks']} tasks: {counts['verified']} verified ({counts['edited']} edited), "
                  f"{counts['unverified']} unverified, {counts['removed']} removed")
    if result.agreement.get("tasks"):
        spans = result.agreement["spans"]["strict"]
        console.print(f"teacher vs reviewers, strict span F1: micro {spans['micro']['f1']:.4f}, "
                      f"macro {spans['macro']['f1']:.4f}")
    console.print(f"run directory: {run.path}")


@factcheck_app.command("export")
def factcheck_export(
    records: str = typer.Argument(..., help="generation run directory or records file"),
    output: str = output_option("CSV score sheet to write (must not exist)", required=True),
    schema: Optional[str] = typer.Option(None, "--schema", help=SCHEMA_HELP),
    per_aspect: int = typer.Option(50, "--per-aspect", help="facts sampled per relation type"),
    seed: int = typer.Option(0, "--seed", help="seed of the sample"),
) -> None:
    """Sample facts per aspect into a CSV; people fill the 'correct' column with 1/0."""
    from adaptlab.recipes import review

    counts = review.factcheck_export(records, schema or records, output, per_aspect, seed)
    console.print(f"{counts['sampled']} facts in {output}: " + ", ".join(
        f"{aspect} {row['sampled']}/{row['available']}" for aspect, row in counts["per_aspect"].items()))


@factcheck_app.command("score")
def factcheck_score(
    sheet: str = typer.Argument(..., help="the filled CSV score sheet"),
    as_json: bool = json_option("print the scores as JSON"),
) -> None:
    """Teacher factual accuracy per aspect and group, with 95% Wilson intervals."""
    from adaptlab.recipes import review

    scores = review.factcheck_score(sheet)
    if as_json:
        print_json(scores)
        return
    for name, bucket in [("overall", scores["overall"]), *scores["per_aspect"].items()]:
        if bucket["accuracy"] is None:
            console.print(f"{name:>12}: nothing checked ({bucket['unscored']} unscored)")
            continue
        lo, hi = bucket["ci95"]
        console.print(f"{name:>12}: {bucket['accuracy']:.3f} ({bucket['correct']}/{bucket['checked']}, "
                      f"95% CI {lo:.3f}-{hi:.3f}, {bucket['unscored']} unscored)")
