"""``adaptlab lm prepare | train | evaluate``: continual pretraining and SFT of causal language models."""

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


@app.command()
def prepare(
    config: Optional[str] = config_argument("YAML config file, or a shipped one's name (e.g. lm_prepare)"),
    overrides: Optional[list[str]] = overrides_argument(),
    output: Optional[str] = output_option(),
) -> None:
    """Clean, de-duplicate, tokenize and pack a corpus into blocks; held-out domain and general splits."""
    from adaptlab.config import load_config
    from adaptlab.recipes import lm_prepare

    config, overrides = resolve_config(config, overrides)
    run, metrics = lm_prepare.prepare(load_config(lm_prepare.PrepareConfig, config, overrides, {"output": output}))
    splits = metrics["splits"]
    console.print(", ".join(f"{name}: {row['rows']} blocks / {row['tokens']} tokens" for name, row in splits.items()))
    console.print(f"prepared corpus: {run.path}")


@app.command()
def train(
    config: Optional[str] = config_argument("YAML config file, or a shipped one's name (e.g. lm_cpt, lm_sft)"),
    overrides: Optional[list[str]] = overrides_argument(),
    output: Optional[str] = output_option("run directory (an existing one only with resume)"),
) -> None:
    """Continual pretraining (mode cpt, packed blocks) or SFT (mode sft: chat or prompt/completion examples, loss on
    the assistant turns or completions, optionally weighted per span or token)."""
    from adaptlab.config import load_config
    from adaptlab.recipes import lm_train

    config, overrides = resolve_config(config, overrides)
    run, metrics = lm_train.train(load_config(lm_train.LMTrainConfig, config, overrides, {"output": output}))
    final = {k: v for k, v in metrics.items() if k.startswith("final_")}
    console.print("  ".join(f"{k.removeprefix('final_')} {v:.4g}" for k, v in final.items()))
    console.print(f"model: {run.model}")


@app.command()
def evaluate(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    output: Optional[str] = output_option(),
    as_json: bool = json_option("print the table as JSON"),
) -> None:
    """Perplexity on text files, multiple-choice tasks by log-likelihood, and the instruction-following probe."""
    from adaptlab.config import load_config
    from adaptlab.recipes import lm_evaluate

    config, overrides = resolve_config(config, overrides)
    run, metrics = lm_evaluate.evaluate(load_config(lm_evaluate.LMEvalConfig, config, overrides, {"output": output}))
    if as_json:
        print_json(metrics["table"])
        return
    for row in metrics["table"]:
        console.print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    console.print(f"run directory: {run.path}")


@app.command("export-task")
def export_task(
    task: str = typer.Argument(..., help="task JSONL (adaptlab.lm.mc_tasks format), lm-eval YAML, packaged:NAME, "
                                         "or a .txt file (documents separated by blank lines) for perplexity"),
    output: str = output_option("folder to write NAME.yaml and NAME.jsonl to (must not exist)", required=True),
    name: Optional[str] = typer.Option(None, "--name", help="lm-eval task name; default: the file's stem"),
) -> None:
    """Write a task as an lm-evaluation-harness task, to run with `lm_eval --include_path DIR --tasks NAME`."""
    from adaptlab.lm.lm_eval_tasks import export_task as export
    from adaptlab.recipes.lm_evaluate import resolve_input

    name, holds, path = export(resolve_input(task), output, name)
    console.print(f"{holds} -> {path}")
    console.print(f"run it with: lm_eval --model hf --model_args pretrained=MODEL --include_path {path.parent} "
                  f"--tasks {name}")
