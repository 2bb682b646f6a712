"""``adaptlab merge CONFIG | merge chat-vector ... | merge search CONFIG``."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import (
    RunByDefault,
    config_argument,
    console,
    json_option,
    output_option,
    overrides_argument,
    print_json,
    resolve_config,
)

app = typer.Typer(cls=RunByDefault, no_args_is_help=True)


def _summary(result) -> None:
    report = result.report
    console.print(f"{report['tensors']} tensors ({', '.join(f'{k} {v}' for k, v in report['actions'].items())}) "
                  f"-> {report['output_dtype']} in {report['seconds']} s, peak RSS {report['peak_rss_mb']} MB")
    console.print(f"merged model: {result.output_dir}")
    console.print(f"report: {result.output_dir / 'report.html'}")


@app.command()
def run(
    config: Optional[str] = config_argument("YAML merge config, adaptlab's or mergekit's (merge_method, "
                                            "models[].parameters, gradients, filters), or a shipped one's name "
                                            "(e.g. merge_ties)"),
    overrides: Optional[list[str]] = overrides_argument(),
    output: Optional[str] = output_option("merged model and run directory (must not exist)"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32, float16 or bfloat16"),
) -> None:
    """Merge models as the config says (linear, task_arithmetic, ties, dare_linear, dare_ties, slerp)."""
    from adaptlab.merge.engine import merge_run
    from adaptlab.merge.mergekit_config import load_merge_config

    config, overrides = resolve_config(config, overrides)
    _summary(merge_run(load_merge_config(config, overrides, {"output": output, "dtype": dtype})))


@app.command("chat-vector")
def chat_vector(
    base: str = typer.Option(..., "--base", help="the base model both others started from"),
    instruct: str = typer.Option(..., "--instruct", help="the base model's instruction-tuned version"),
    domain: str = typer.Option(..., "--domain", help="the base model after continual pretraining on domain text"),
    output: str = output_option("merged model and run directory (must not exist)", required=True),
    scale: float = typer.Option(1.0, "--scale", help="λ in θ_domain + λ·(θ_instruct − θ_base)"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="default: the base model's"),
    vocab: str = typer.Option("strict", "--vocab", help="strict, base or union when tokenizers differ"),
) -> None:
    """θ_out = θ_domain + λ·(θ_instruct − θ_base): the domain tokenizer, the instruct chat template."""
    from adaptlab.merge.chat_vector import chat_vector_config
    from adaptlab.merge.engine import merge_run

    _summary(merge_run(chat_vector_config(base, instruct, domain, output, scale, dtype, vocab)))


@app.command()
def search(
    config: Optional[str] = config_argument("YAML search config, or a shipped one's name (e.g. merge_search)"),
    overrides: Optional[list[str]] = overrides_argument(),
    output: Optional[str] = output_option("run directory with the candidates (must not exist)"),
    as_json: bool = json_option("print the ranking as JSON"),
) -> None:
    """Try a grid of λ (or weights) and rank the merges by perplexity on held-out text."""
    from adaptlab.config import load_config
    from adaptlab.merge.search import SearchConfig, run_search

    config, overrides = resolve_config(config, overrides)
    run_dir, result = run_search(load_config(SearchConfig, config, overrides, {"output": output}))
    if as_json:
        print_json(result)
        return
    console.print(result["objective"])
    for row in result["rows"]:
        general = f"  ppl_general {row['ppl_general']:.3f}" if row.get("ppl_general") is not None else ""
        marker = "  <- best" if row == result["best"] else ""
        console.print(f"{result['target']} {row['value']:g}: ppl_domain {row['ppl_domain']:.3f}{general}  "
                      f"score {row['score']:.4f}{marker}")
    if result["best_model"]:
        console.print(f"best merged model: {result['best_model']}")
    console.print(f"run directory: {run_dir.path}")
