"""``adaptlab model import FILE.gguf``: a GGUF file as an HF model directory every command can open."""

from __future__ import annotations

from typing import Optional

import typer

from adaptlab.cli.common import console, json_option, output_option, print_json

app = typer.Typer(no_args_is_help=True)


@app.command("import")
def import_(
    path: str = typer.Argument(..., help="a .gguf file (llama.cpp's format)"),
    output: Optional[str] = output_option("model directory to write (must not exist); default: the cache"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 (exact dequantised values), bfloat16 or float16"),
    as_json: bool = json_option("print the import record as JSON"),
) -> None:
    """Check and convert a GGUF once into safetensors, tokenizer, chat template and generation config.

    Every model argument of adaptlab also takes the .gguf path itself: it is converted on first use
    into adaptlab's cache ($ADAPTLAB_CACHE_DIR, else ~/.cache/adaptlab), keyed by the file's SHA-256.
    """
    import json

    from adaptlab.models.gguf import RECORD_FILE, import_gguf

    directory = import_gguf(path, output, dtype)
    record = json.loads((directory / RECORD_FILE).read_text(encoding="utf-8"))
    if as_json:
        print_json({"directory": str(directory), **record})
        return
    types = ", ".join(f"{name} x{count}" for name, count in record["tensor_types"].items())
    console.print(f"{record['architecture']} model ({record['tensors']} tensors: {types}) saved as {dtype}")
    console.print(f"model directory: {directory}")
