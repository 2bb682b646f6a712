"""``adaptlab config list | show NAME | cp NAME DEST``: the example configs shipped inside the package;
``adaptlab config reference``: every config key of every command, generated from the pydantic models."""

from __future__ import annotations

from typing import Any, Optional

import typer

from adaptlab.cli.common import console, output_option

app = typer.Typer(no_args_is_help=True)
NAME_HELP = "a shipped config's name (adaptlab config list), e.g. ner or accelerate/ddp"


def _complete_name(incomplete: str) -> list[str]:
    """Shell completion of NAME (adaptlab --install-completion)."""
    from adaptlab import example_configs

    return [name for name in example_configs.names() if name.startswith(incomplete)]


def name_argument() -> Any:
    return typer.Argument(..., help=NAME_HELP, autocompletion=_complete_name, show_default=False)


@app.command("list")
def list_() -> None:
    """Every shipped config with the first line of its comment (what runs it)."""
    from adaptlab import example_configs

    names = example_configs.names()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {_summary(example_configs.path(name))}")
    print("copy one to edit it: adaptlab config cp NAME DEST; or give its NAME as the CONFIG of its command")


@app.command()
def show(name: str = name_argument()) -> None:
    """Print a shipped config (a folder: the names of its files)."""
    from adaptlab import example_configs

    path = example_configs.path(name)
    if path.is_dir():
        for child in sorted(path.iterdir()):
            console.print(f"{name}/{child.stem}")
        return
    print(path.read_text(encoding="utf-8"), end="")


@app.command()
def cp(
    name: str = name_argument(),
    dest: str = typer.Argument(..., help="file (or folder to copy into) to write; an existing file is never replaced"),
) -> None:
    """Copy a shipped config (or folder of them) to edit it, as torchtune's ``tune cp``."""
    from adaptlab import example_configs

    target = example_configs.copy(name, dest)
    console.print(f"copied {name} to {target}")


@app.command()
def reference(
    output: Optional[str] = output_option("Markdown file to write, e.g. docs/config-reference.md (replaced if it "
                                          "exists); default: print to stdout"),
) -> None:
    """Every config key of every command (type, default, description) as Markdown, from the pydantic models."""
    from pathlib import Path

    from adaptlab import config_reference
    from adaptlab.errors import ConfigError
    from adaptlab.runs import atomic_write_text

    if output is not None and Path(output).is_dir():
        raise ConfigError(f"--output {output} is a folder; give the Markdown file to write "
                          "(e.g. docs/config-reference.md)")
    text = config_reference.render()
    if output is None:
        print(text, end="")
        return
    atomic_write_text(output, text)
    console.print(f"wrote {output}")


def _summary(path) -> str:
    if path.is_dir():
        return f"folder: {', '.join(sorted(child.stem for child in path.iterdir()))}"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return f"{path.suffix.lstrip('.').upper()} settings"
