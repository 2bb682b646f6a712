"""``adaptlab fractal train | score | evaluate | dpo-pairs | sft``: sentence scores learned from response labels."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import (
    config_argument,
    console,
    json_option,
    model_option,
    output_option,
    overrides_argument,
    print_json,
    resolve_config,
)

app = typer.Typer(no_args_is_help=True)


@app.command()
def train(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument("key=value config overrides (train.aggregation=min)"),
    data: Optional[str] = typer.Option(None, "--data", help="bags JSONL (or multispanqa / qa_feedback + data_root)"),
    output: Optional[str] = output_option(),
    aggregation: Optional[str] = typer.Option(None, "--aggregation", help="max, min, avg, lse_max, softmin, ..."),
) -> None:
    """Train a sentence scorer from bag labels (MiniLM features, the paper's loss weights by default)."""
    from adaptlab.config import load_config
    from adaptlab.recipes import fractal

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(fractal.FractalTrainRunConfig, config, overrides,
                      {"data": data, "output": output, "train.aggregation": aggregation})
    run, metrics = fractal.train(cfg)
    console.print(f"trained on {metrics['bags']} bags / {metrics['sentences']} sentences; "
                  f"final loss {metrics['history'][-1]['loss']:.4f}")
    console.print(f"run directory: {run.path}")


@app.command()
def score(
    model: str = model_option("a 'fractal train' run or model directory", required=True),
    input_file: str = typer.Option(..., "--input", help="bags JSONL to score"),
    output: str = output_option("JSONL to write: {id, sentences, scores} per bag", required=True),
) -> None:
    """Score every sentence of every bag (scores in [0, 1], higher = the bag label's positive class)."""
    from adaptlab.recipes import fractal

    count = fractal.score(model, input_file, output)
    console.print(f"scored {count} bags into {output}")


@app.command("dpo-pairs")
def dpo_pairs(
    model: str = model_option("a 'fractal train' run or model directory", required=True),
    input_file: str = typer.Option(..., "--input", help='JSONL: {"prompt": ..., "responses": [...]} per line'),
    output: str = output_option("DPO JSONL to write: prompt, chosen, rejected", required=True),
    reduce: str = typer.Option("min", "--reduce", help="a response's reward: min or mean of its sentence scores"),
    min_margin: float = typer.Option(0.0, "--min-margin", help="skip prompts whose best and worst differ less"),
) -> None:
    """Use the scorer as a process reward: best vs worst response per prompt, as DPO training pairs."""
    from adaptlab.recipes import fractal

    counts = fractal.dpo_pairs(model, input_file, output, reduce, min_margin)
    console.print(f"{counts['pairs']} pairs from {counts['prompts']} prompts "
                  f"({counts['skipped_too_few_responses']} with < 2 responses, {counts['skipped_small_margin']} "
                  f"below the margin) in {output}")


@app.command()
def evaluate(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument(),
    data: Optional[str] = typer.Option(None, "--data", help="bags JSONL with sentence_labels"),
    output: Optional[str] = output_option(),
    as_json: bool = json_option("print the summary as JSON"),
) -> None:
    """Cosine, BagLoss, FRACTAL, FRACTAL + pseudo-labels and supervised on grouped folds: AUC and bag accuracy."""

    from adaptlab.config import load_config
    from adaptlab.recipes import fractal

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(fractal.FractalEvalConfig, config, overrides, {"data": data, "output": output})
    run, metrics = fractal.evaluate(cfg)
    if as_json:
        print_json(metrics["summary"])
        return
    for method, row in metrics["summary"].items():
        console.print(f"{method:>15}: AUC-ROC {row['auc_roc']['mean']:.4f} ± {row['auc_roc']['std']:.4f}  "
                      f"AUC-PR {row['auc_pr']['mean']:.4f}  bag accuracy {row['bag_accuracy']['mean']:.4f}")
    console.print(f"run directory: {run.path}")


@app.command()
def sft(
    config: Optional[str] = config_argument(),
    overrides: Optional[list[str]] = overrides_argument("key=value overrides (mode=mask threshold=0.6)"),
    model: Optional[str] = model_option("causal LM to fine-tune (HF name or directory)"),
    scores: Optional[str] = typer.Option(None, "--scores", help="'fractal score' output: {id, sentences, scores}"),
    bags: Optional[str] = typer.Option(None, "--bags", help="the bags JSONL that was scored (context, response)"),
    output: Optional[str] = output_option("run directory (an existing one only to resume)"),
) -> None:
    """Fine-tune a causal LM on the scored responses, each token's loss weighted (or masked) by its sentence score."""

    from adaptlab.config import load_config
    from adaptlab.recipes import fractal_sft

    config, overrides = resolve_config(config, overrides)
    cfg = load_config(fractal_sft.FractalSFTConfig, config, overrides,
                      {"model": model, "scores": scores, "bags": bags, "output": output})
    run, metrics = fractal_sft.sft(cfg)
    counts = metrics["counts"]
    losses = [row["loss"] for row in metrics["history"] if "loss" in row]
    console.print(f"trained on {counts['examples']} examples ({counts['skipped_nothing_to_learn']} skipped: nothing "
                  f"to learn; {counts['truncated_conversations']} truncated); masked token share "
                  f"{counts['masked_token_share']:.3f}, mean weight {counts['mean_weight']:.3f}")
    if losses:
        console.print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} in {metrics['steps']} steps")
    if "final_eval_held_out_perplexity" in metrics:
        console.print(f"held-out perplexity {metrics['final_eval_held_out_perplexity']:.4g}")
    console.print(f"run directory: {run.path}")
