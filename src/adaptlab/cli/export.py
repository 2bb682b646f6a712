"""``adaptlab export gguf MODEL --output FILE.gguf``: a Llama/Qwen2 model for llama.cpp and Ollama."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from adaptlab.cli.common import console, json_option, output_option, print_json

app = typer.Typer(no_args_is_help=True)


@app.command("gguf")
def gguf(
    model: str = typer.Argument(..., help="HF model directory, or an adaptlab run directory holding model/"),
    output: str = output_option("the .gguf file to write (must not exist)", required=True),
    dtype: str = typer.Option("f16", "--dtype", help="f16 (llama.cpp's usual), bf16 or f32 for the matrices; "
                                                     "norms and biases stay f32"),
    modelfile: Optional[str] = typer.Option(None, "--modelfile",
                                            help="Ollama Modelfile to write (must not exist); default: Modelfile "
                                                 "beside the .gguf"),
    no_modelfile: bool = typer.Option(False, "--no-modelfile", help="write no Ollama Modelfile"),
    verify: bool = typer.Option(False, "--verify", help="load the file back with transformers and print the max "
                                                        "|difference| of its logits from the source model's "
                                                        "(needs memory for the model in float32)"),
    as_json: bool = json_option(),
) -> None:
    """Write a Llama- or Qwen2-family causal LM as GGUF (llama.cpp's format) with an Ollama Modelfile.

    The tokenizer and its chat template travel in the file; the Modelfile translates ChatML and Llama 3
    chat templates to Ollama's syntax. Then: `ollama create NAME -f Modelfile`, or `llama-cli -m FILE.gguf`.
    """
    from adaptlab.models.gguf_export import check_logits, export_gguf

    target = None if no_modelfile else (modelfile or Path(output).parent / "Modelfile")
    result = export_gguf(model, output, dtype, target)
    check = check_logits(model, result.path, dtype) if verify else None
    if as_json:
        print_json({**vars(result), "logits_max_difference": vars(check) if check else None})
        return
    tied = ", output tied to the embeddings" if result.tied_embeddings else ""
    console.print(f"{result.architecture} model, {result.tensors} tensors as {result.dtype}{tied}: "
                  f"{result.path} ({result.size_bytes / 2**20:.1f} MiB)")
    if result.modelfile is not None:
        template = (f"{result.chat_template} chat template" if result.chat_template else
                    "no TEMPLATE: the chat template has no known Ollama translation (see the note in the file)")
        console.print(f"Ollama Modelfile: {result.modelfile} ({template})")
    if check is not None:
        console.print(f"read back by transformers: logits max |difference| {check.source:.3g} from the source model, "
                      f"{check.rounded_source:.3g} from it with the weights rounded to {dtype}")
