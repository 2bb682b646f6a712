"""``adaptlab teacher zero-shot-ner``: a teacher LLM as a zero-shot tagger, scored like a student."""

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
    resolve_config,
)

app = typer.Typer(no_args_is_help=True)


@app.command("zero-shot-ner")
def zero_shot_ner(
    config: Optional[str] = config_argument("YAML config file, or a shipped one's name (e.g. zero_shot_ner)"),
    overrides: Optional[list[str]] = overrides_argument(),
    data: Optional[str] = typer.Option(None, "--data", help="gold records to tag and score"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="universalner or json_spans"),
    student: Optional[str] = typer.Option(None, "--student", help="NER run/model directory to compare"),
    output: Optional[str] = output_option(),
    as_json: bool = json_option("print all metrics as JSON"),
) -> None:
    """Tag gold data with the teacher and report strict / overlap / string-match F1 (teacher vs student)."""
    from adaptlab.config import load_config
    from adaptlab.recipes import zero_shot

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(zero_shot.ZeroShotConfig, config, overrides,
                      {"data": data, "prompt": prompt, "student": student, "output": output})
    run, metrics = zero_shot.run(cfg)
    if as_json:
        print_json(metrics)
        return
    for name in ("teacher", "student"):
        if name in metrics:
            scores = "  ".join(f"{mode} {metrics[name][mode]['micro']['f1']:.4f}" for mode in zero_shot.MODES)
            console.print(f"{name:>8} micro F1: {scores}")
    console.print(f"run directory: {run.path}")
