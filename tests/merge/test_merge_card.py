"""The model card of `adaptlab merge`: written inside the atomically renamed output, holding the merge in mergekit's
dialect (which reads back as the same merge), or saying why a merge has no mergekit equivalent."""

from __future__ import annotations

import yaml
from test_mergekit_dialect import plans, same_plan

from adaptlab.merge.mergekit_config import load_merge_config
from model_cards import code_block, read_card, resolved_config, run_load_snippet, section


def merge_config(tmp_path, family, **changes) -> str:
    config = {"method": "ties", "base_model": str(family["base"]), "progress": False,
              "models": [{"model": str(family["domain"]), "weight": 0.6, "density": 0.5},
                         {"model": str(family["instruct"]), "weight": 0.4, "density": 0.7}],
              "rules": [{"match": r"self_attn", "parameters": {"lambda": 0.8}}], **changes}
    path = tmp_path / "merge.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return str(path)


def test_a_merge_card_holds_the_merge_in_mergekit_dialect(model_family, tmp_path, run_cli):
    family = model_family("llama")
    out = tmp_path / "merged"
    code, _, err = run_cli("merge", merge_config(tmp_path, family), "--output", out)
    assert code == 0, err
    front, body = read_card(out)
    assert front == {"library_name": "transformers", "pipeline_tag": "text-generation",
                     "tags": ["adaptlab", "merge", "ties", "mergekit"]}
    assert "A causal language model (LlamaForCausalLM), a ties merge of its inputs." in body
    assert f"- `{family['base']}` (a local model)" in section(body, "Base model")
    assert "reads no data" in section(body, "Data") and "| tensors | " in section(body, "Metrics")
    assert str(out) in section(body, "How to load it") and ".partial-" not in body  # where the model now is
    exported = code_block(section(body, "The merge in mergekit's dialect"), "yaml")
    assert exported == (out / "mergekit_config.yml").read_text().rstrip()
    (tmp_path / "from_card.yml").write_text(exported)
    unused = {"output": str(tmp_path / "unused")}
    from_card = load_merge_config(tmp_path / "from_card.yml", flags=unused)
    run_config = resolved_config(out)
    assert run_config == yaml.safe_load((out / "config.yaml").read_text())
    (tmp_path / "run_config.yaml").write_text(yaml.safe_dump({**run_config, **unused}))
    same_plan(plans(load_merge_config(tmp_path / "run_config.yaml")), plans(from_card))
    run_load_snippet(out)


def test_a_merge_without_mergekit_equivalent_says_so(model_family, tmp_path, run_cli):
    family = model_family("llama")
    out = tmp_path / "merged"
    code, _, err = run_cli("merge", merge_config(tmp_path, family, vocab="union", tokenizer_from=str(family["domain"])),
                           "--output", out)
    assert code == 0, err
    front, body = read_card(out)
    assert "mergekit" not in front["tags"] and not (out / "mergekit_config.yml").exists()
    text = section(body, "The merge in mergekit's dialect")
    assert text.startswith("\nThis merge has no mergekit equivalent: vocab: union around ") and "```" not in text
    assert "mergekit's union starts from the base model's tokenizer" in text
