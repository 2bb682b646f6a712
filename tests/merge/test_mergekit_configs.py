"""Published-style mergekit configs run as they are by ``adaptlab merge`` and by mergekit itself, tensor by tensor.

The models are tiny random Llamas of 6 layers, so gradients take several values over the layers.
mergekit first casts the inputs to the config's ``dtype``, where adaptlab reads them as they are,
computes in float32 and rounds once; linear and slerp then agree to an ulp or two of the 16-bit
output. mergekit's TIES also computes in ``dtype``: in 16 bits its trimming ranks rounded task
vectors (with many equal magnitudes) and its sign election sums rounded values, which moves single
entries by a whole task-vector entry. So the TIES config runs in float32, where both are exact up to
float32 rounding, and the comparison checks the semantics (gradients, filters, weights, densities).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from adaptlab import example_configs

ROOT = Path(__file__).resolve().parents[2]
mergekit_config = pytest.importorskip("mergekit.config")
mergekit_merge = pytest.importorskip("mergekit.merge")

LINEAR = """
models:
  - model: {a}
    parameters:
      weight: 1.0
  - model: {b}
    parameters:
      weight: 0.3
  - model: {c}
    parameters:
      weight: 0.5
merge_method: linear
dtype: float16
"""

TIES = """
models:
  - model: {a}
    parameters:
      density: [1, 0.7, 0.1] # density gradient
      weight: 1.0
  - model: {b}
    parameters:
      density: 0.5
      weight: [0, 0.3, 0.7, 1] # weight gradient
  - model: {c}
    parameters:
      density: 0.33
      weight:
        - filter: mlp
          value: 0.5
        - value: 0
merge_method: ties
base_model: {base}
parameters:
  normalize: true
  int8_mask: true
tokenizer_source: base
dtype: float32 # published: float16 (see the module docstring)
"""

SLERP = example_configs.path("merge_slerp_mergekit").read_text().replace(  # the shipped example
    "models/base", "{base}").replace("models/instruct", "{b}")

# max |Δ| allowed per tensor, in ulps of the output dtype at the tensor's largest |value|
CASES = {"linear": (LINEAR, 2), "ties": (TIES, 4), "slerp": (SLERP, 2)}


@pytest.fixture(scope="module")
def llamas(tmp_path_factory, tokenizer_dir, derive, chat_template):
    """base and three models derived from it: 6-layer tiny Llamas (b has a chat template)."""
    config = LlamaConfig(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    base = LlamaForCausalLM(config).eval()
    root = tmp_path_factory.mktemp("llama6")
    paths = {}
    for seed, name in enumerate(["base", "a", "b", "c"]):
        model = derive(base, seed) if seed else base
        model.save_pretrained(root / name)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        if name == "b":
            tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def bound(reference: torch.Tensor, ulps: int) -> float:
    """``ulps`` units in the last place of ``reference``'s dtype at its largest magnitude."""
    return ulps * torch.finfo(reference.dtype).eps * float(reference.float().abs().max())


@pytest.mark.parametrize("case", sorted(CASES))
def test_published_mergekit_config_agrees_with_mergekit(case, llamas, tmp_path, run_cli, capsys, state,
                                                        chat_template):
    text, ulps = CASES[case]
    config = tmp_path / f"{case}.yml"
    config.write_text(text.format(**llamas))
    code, _, err = run_cli("merge", config, "--output", tmp_path / "ours", "progress=false")
    assert code == 0, err
    theirs = mergekit_config.MergeConfiguration.model_validate(yaml.safe_load(config.read_text()))
    mergekit_merge.run_merge(theirs, str(tmp_path / "mergekit"), mergekit_merge.MergeOptions(quiet=True))
    mine, reference = state(tmp_path / "ours"), state(tmp_path / "mergekit")
    assert sorted(mine) == sorted(reference)
    worst = 0.0
    for name, expected in reference.items():
        assert mine[name].dtype == expected.dtype, name
        difference = float((mine[name].float() - expected.float()).abs().max())
        assert difference <= bound(expected, ulps), (name, difference)
        worst = max(worst, difference)
    with capsys.disabled():
        print(f"\nmergekit agreement, {case} ({expected.dtype}): max |Δ| {worst:.3g} over {len(reference)} tensors")
    if case == "slerp":  # chat_template: auto takes the one template among the inputs
        assert (tmp_path / "ours" / "chat_template.jinja").read_text() == chat_template
    report = json.loads((tmp_path / "ours" / "merge_report.json").read_text())
    assert report["mergekit_config"] == "mergekit_config.yml"
