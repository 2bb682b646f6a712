"""``adaptlab fractal train | score | evaluate | dpo-pairs | sft``: sentence scores learned from response labels."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import config_or_override, console, print_json

app = typer.Typer(no_args_is_help=True)


@app.command()
def train(
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides (train.aggregation=min)"),
    data: Optional[str] = typer.Option(None, "--data", help="bags JSONL (or multispanqa / qa_feedback + data_root)"),
    output: Optional[str] = typer.Option(None, "--output", help="run directory (must not exist)"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML config (see configs/fractal.yaml)"),
    aggregation: Optional[str] = typer.Option(None, "--aggregation", help="max, min, avg, lse_max, softmin, ..."),
) -> None:
    """Train a sentence scorer from bag labels (MiniLM features, the paper's loss weights by default)."""
    from adaptlab.config import load_config
    from adaptlab.recipes import fractal

    cfg = load_config(fractal.FractalTrainRunConfig, config, overrides,
                      {"data": data, "output": output, "train.aggregation": aggregation})
    run, metrics = fractal.train(cfg)
    console.print(f"trained on {metrics['bags']} bags / {metrics['sentences']} sentences; "
                  f"final loss {metrics['history'][-1]['loss']:.4f}")
    console.print(f"run directory: {run.path}")


@app.command()
def score(
    model: str = typer.Option(..., "--model", help="a 'fractal train' run or model directory"),
    input_file: str = typer.Option(..., "--input", help="bags JSONL to score"),
    output: str = typer.Option(..., "--output", help="JSONL to write: {id, sentences, scores} per bag"),
) -> None:
    """Score every sentence of every bag (scores in [0, 1], higher = the bag label's positive class)."""
    from adaptlab.recipes import fractal

    count = fractal.score(model, input_file, output)
    console.print(f"scored {count} bags into {output}")


@app.command("dpo-pairs")
def dpo_pairs(
    model: str = typer.Option(..., "--model", help="a 'fractal train' run or model directory"),
    input_file: str = typer.Option(..., "--input", help='JSONL: {"prompt": ..., "responses": [...]} per line'),
    output: str = typer.Option(..., "--output", help="DPO JSONL to write: prompt, chosen, rejected"),
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
    config: Optional[str] = typer.Argument(None, help="YAML config (see configs/fractal.yaml)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value config overrides"),
    data: Optional[str] = typer.Option(None, "--data", help="bags JSONL with sentence_labels"),
    output: Optional[str] = typer.Option(None, "--output", help="run directory (must not exist)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cosine, BagLoss, FRACTAL, FRACTAL + pseudo-labels and supervised on grouped folds: AUC and bag accuracy."""

    from adaptlab.config import load_config
    from adaptlab.recipes import fractal

    config, overrides = config_or_override(config, overrides)
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
    config: Optional[str] = typer.Argument(None, help="YAML config (see configs/fractal_sft.yaml)"),
    overrides: Optional[list[str]] = typer.Argument(None, help="key=value overrides (mode=mask threshold=0.6)"),
    model: Optional[str] = typer.Option(None, "--model", help="causal LM to fine-tune (HF name or directory)"),
    scores: Optional[str] = typer.Option(None, "--scores", help="'fractal score' output: {id, sentences, scores}"),
    bags: Optional[str] = typer.Option(None, "--bags", help="the bags JSONL that was scored (context, response)"),
    output: Optional[str] = typer.Option(None, "--output", help="run directory (an existing one only to resume)"),
) -> None:
    """Fine-tune a causal LM on the scored responses, each token's loss weighted (or masked) by its sentence score."""

    from adaptlab.config import load_config
    from adaptlab.recipes import fractal_sft

    config, overrides = config_or_override(config, overrides)
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
