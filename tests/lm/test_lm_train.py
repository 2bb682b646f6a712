"""``adaptlab lm train``: cpt on packed blocks and sft on chat JSONL with a tiny Llama, CPU, a few steps.

(Named test_lm_train.py: tests/fractal/test_train.py already owns the module name test_train.)
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import save_tiny_llama, train_config, write_prepared_corpus, write_sft_jsonl
from transformers import AutoModelForCausalLM

from adaptlab import example_configs
from adaptlab.config import validate_config
from adaptlab.errors import ConfigError, DataError, ModelError, RunDirError
from adaptlab.lm.checkpoints import checkpoint_problem, list_checkpoints
from adaptlab.lm.train import resolve_liger
from adaptlab.models.gguf import resolve_model
from adaptlab.recipes.lm_train import LMTrainConfig, train
from adaptlab.tuning.settings import resolve_bf16
from gguf_files import write_tiny_gguf

CONFIGS = example_configs.root()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm-train")
    model = save_tiny_llama(root / "model")
    return {"root": root, "model": model, "corpus": write_prepared_corpus(root / "corpus", model)}


@pytest.fixture(scope="module")
def cpt_run(assets, tmp_path_factory):
    """One cpt run through the CLI: 8 steps, checkpoints every 2 (keep 2), evaluation every 4."""
    from adaptlab.cli import main

    out = tmp_path_factory.mktemp("cpt") / "run"
    config = assets["root"] / "cpt.yaml"
    config.write_text(yaml.safe_dump(train_config(assets["model"], assets["corpus"], out, eval_steps=3)))
    assert main(["lm", "train", str(config)]) == 0
    return out, json.loads((out / "metrics.json").read_text())


def make(assets, output, **overrides) -> LMTrainConfig:
    top = {key: overrides.pop(key) for key in ("model", "data") if key in overrides}
    return validate_config(LMTrainConfig, {**train_config(assets["model"], assets["corpus"], output, **overrides),
                                           **top})


def test_cpt_run_directory_metrics_and_report(cpt_run):
    out, metrics = cpt_run
    assert metrics["steps"] == 8 and metrics["mode"] == "cpt" and metrics["resumed_from"] is None
    train_rows = [row for row in metrics["history"] if "loss" in row]
    assert [row["step"] for row in train_rows] == list(range(1, 9))
    assert train_rows[-1]["loss"] < train_rows[0]["loss"] - 0.1  # it learns
    evals = [row for row in metrics["history"] if "eval_domain_perplexity" in row]
    assert [row["step"] for row in evals] == [0, 3, 6, 8]  # the baseline, every 3 steps, and the last step
    assert all("eval_general_perplexity" in row for row in evals)
    assert evals[-1]["eval_domain_perplexity"] < evals[0]["eval_domain_perplexity"]
    assert metrics["final_eval_domain_perplexity"] == pytest.approx(math.exp(metrics["final_eval_domain_nll"]))
    assert metrics["final_train_loss"] == train_rows[-1]["loss"]
    assert metrics["data_stats"]["block_size"] == 32
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "Held-out perplexity" in html
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.use_cache is True and (out / "model" / "tokenizer.json").is_file()
    assert not (out / "model" / "training_args.bin").exists()


def test_checkpoints_are_marked_and_rotated(cpt_run):
    out, _ = cpt_run
    checkpoints = list_checkpoints(out / "checkpoints")
    assert [c.name for c in checkpoints] == ["checkpoint-6", "checkpoint-8"]  # keep_checkpoints: 2
    assert all(checkpoint_problem(c) is None for c in checkpoints)


def test_schedule_rewarms_then_decays_to_the_floor(cpt_run):
    """warmup 2 steps from 0, then cosine from 3e-3 to min_lr_rate * 3e-3 over the remaining 6 steps."""
    _, metrics = cpt_run
    lrs = [row["learning_rate"] for row in metrics["history"] if "loss" in row]
    peak, floor = 3e-3, 0.1 * 3e-3
    expected = [peak * step / 2 if step < 2 else
                floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * (step - 2) / 6)) for step in range(8)]
    assert lrs == pytest.approx(expected)


def test_held_out_perplexity_is_exactly_token_weighted(cpt_run, assets):
    """Recompute the last evaluation by hand: total -log p over all target tokens / their number."""
    import datasets

    out, metrics = cpt_run
    model = AutoModelForCausalLM.from_pretrained(out / "model").eval()
    model.config.use_cache = False
    rows = datasets.load_from_disk(str(assets["corpus"] / "data" / "eval_domain"))
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = model(input_ids=ids, position_ids=torch.tensor([row["position_ids"]])).logits[0, :-1]
            targets = labels[0, 1:] != -100
            total += torch.nn.functional.cross_entropy(logits[targets], labels[0, 1:][targets], reduction="sum").item()
            count += int(targets.sum())
    assert metrics["history"][-1]["eval_domain_tokens"] == count
    assert metrics["final_eval_domain_nll"] == pytest.approx(total / count, rel=1e-5)


def test_sft_mode_trains_on_chat_data(assets, tmp_path):
    train_file = write_sft_jsonl(tmp_path / "train.jsonl", 24)
    eval_file = write_sft_jsonl(tmp_path / "eval.jsonl", 6, seed=5)
    cfg = validate_config(LMTrainConfig, train_config(assets["model"], train_file, tmp_path / "run", mode="sft",
                                                      eval_data=str(eval_file), max_length=12, max_steps=4))
    run, metrics = train(cfg)
    stats = metrics["data_stats"]["train"]
    assert stats["conversations"] == 24 and stats["truncated_conversations"] > 0  # max_length 12 cuts some
    assert stats["turns_without_special_end_token"] == 0
    assert "final_eval_held_out_perplexity" in metrics and metrics["history"][0]["step"] == 0
    assert "truncated_conversations" in run.report.read_text()


def test_lora_saves_a_merged_model_or_an_adapter(assets, tmp_path):
    from adaptlab.models.adapters import load_pretrained

    lora = {"peft": {"r": 4, "lora_alpha": 8}}
    _, merged = train(make(assets, tmp_path / "merged", max_steps=2, strategy=lora))
    assert merged["strategies"]["peft"]["save"] == "merged" and not merged["strategies"]["peft"]["adapter_unchanged"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "model")
    assert not any("lora" in name for name, _ in model.named_parameters())
    lora["peft"]["save"] = "adapter"
    train(make(assets, tmp_path / "adapter", max_steps=2, strategy=lora))
    assert (tmp_path / "adapter" / "model" / "adapter_config.json").is_file()
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        merged_logits = model(ids).logits
        adapter_logits = load_pretrained(tmp_path / "adapter" / "model", AutoModelForCausalLM)(ids).logits
    assert (merged_logits - adapter_logits).abs().max() < 1e-4  # same seed, same data: the same training


def test_the_old_lora_key_names_strategy_peft(assets, tmp_path):
    with pytest.raises(ConfigError, match="'lora' is now 'strategy.peft'"):
        make(assets, tmp_path / "x", lora={"r": 4})


def test_precision_and_kernel_switches():
    assert resolve_liger("auto") is False  # liger_kernel is not installed here
    with pytest.raises(ConfigError, match="liger_kernel package is not installed"):
        resolve_liger(True)
    if not torch.cuda.is_available():
        assert resolve_bf16("auto") is False
        with pytest.raises(ConfigError, match="bf16: true"):
            resolve_bf16(True)


@pytest.mark.parametrize("overrides, error, message", [
    ({"data": "nowhere"}, DataError, "prepared corpus not found"),
    ({"data": "corpus.jsonl"}, DataError, "mode cpt's data is a prepared corpus directory"),
    ({"mode": "sft", "data": "."}, DataError, "is a folder but not one written by datasets' save_to_disk"),
    ({"resume": "no-such-checkpoint"}, ConfigError, "resume: no-such-checkpoint does not exist"),
    ({"resume": "empty-run"}, ConfigError, "no valid checkpoint"),
    ({"use_liger_kernel": True}, ConfigError, "liger_kernel"),
])
def test_user_mistakes_are_clear_errors_and_leave_no_run(assets, tmp_path, overrides, error, message):
    (tmp_path / "corpus.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    cfg = make(assets, tmp_path / "run", **overrides)
    with pytest.raises(error, match=message):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_corpus_from_another_tokenizer_is_refused(assets, tmp_path, tokenizer):
    """A corpus prepared with MiniLM's WordPiece ids cannot train the tiny word-level model."""
    import shutil

    from adaptlab.lm.prepared import tokenizer_fingerprint

    corpus = shutil.copytree(assets["corpus"], tmp_path / "corpus")
    manifest = json.loads((corpus / "data" / "manifest.json").read_text())
    manifest["tokenizer_fingerprint"] = tokenizer_fingerprint(tokenizer)
    (corpus / "data" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="ids differ from the training tokenizer"):
        train(make(assets, tmp_path / "run", data=str(corpus)))


def test_shipped_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    from adaptlab.config import load_config

    assert load_config(LMTrainConfig, CONFIGS / "lm_cpt.yaml").mode == "cpt"
    assert load_config(LMTrainConfig, CONFIGS / "lm_sft.yaml").mode == "sft"
    types = {name: load_config_from_file(str(CONFIGS / "accelerate" / f"{name}.yaml")).distributed_type
             for name in ("ddp", "fsdp", "deepspeed")}
    assert {name: kind.value for name, kind in types.items()} == {
        "ddp": "MULTI_GPU", "fsdp": "FSDP", "deepspeed": "DEEPSPEED"}
    assert json.loads((CONFIGS / "accelerate" / "deepspeed_zero2.json").read_text())["zero_optimization"]["stage"] == 2


def test_sft_needs_a_chat_template_for_chat_examples_only(assets, tmp_path):
    model = save_tiny_llama(tmp_path / "base", chat_template=None)
    cfg = validate_config(LMTrainConfig, train_config(model, write_sft_jsonl(tmp_path / "t.jsonl", 4),
                                                      tmp_path / "run", mode="sft"))
    with pytest.raises(ModelError, match="no chat template"):
        train(cfg)
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"prompt": f"{w} :", "completion": " river snow .",
                                         "weights": [{"start": 1, "end": 6, "weight": 0.5}]}) + "\n"
                             for w in ("bond", "rate", "tax", "cash")))
    _, metrics = train(validate_config(LMTrainConfig, train_config(model, plain, tmp_path / "plain", mode="sft",
                                                                   max_steps=2)))
    stats = metrics["data_stats"]["train"]
    assert metrics["steps"] == 2 and stats["examples"] == 4 and stats["target_tokens"] == 4 * 4  # + EOS
    assert stats["weight_sum"] == pytest.approx(4 * (0.5 + 3))


def test_config_mistakes(assets, tmp_path):
    with pytest.raises(ConfigError, match="min_lr_rate applies to lr_scheduler_type: cosine only"):
        make(assets, tmp_path, lr_scheduler_type="linear", min_lr_rate=0.2)
    with pytest.raises(ConfigError, match="eval_data is for mode sft"):
        make(assets, tmp_path, eval_data="x.jsonl")
    with pytest.raises(ConfigError, match="a prepared corpus \\(data\\) brings its held-out splits and block size"):
        make(assets, tmp_path, max_length=64)
    with pytest.raises(ConfigError, match="no model"):
        train(make(assets, tmp_path, model=None))
    with pytest.raises(ConfigError, match="unknown key 'strategy.no_such_strategy'"):
        validate_config(LMTrainConfig, {"strategy": {"no_such_strategy": {}}})
    with pytest.raises(ConfigError, match="'torch_compile' has its own key"):
        validate_config(LMTrainConfig, {"training": {"trainer_args": {"torch_compile": True}}})
    with pytest.raises(ConfigError, match="top-level key 'resume'"):
        validate_config(LMTrainConfig, {"training": {"resume_from_checkpoint": "x"}})


def test_settings_have_lm_defaults_and_the_floor_follows_the_scheduler():
    settings = LMTrainConfig().training
    assert (settings.learning_rate, settings.lr_scheduler_type, settings.min_lr_rate, settings.warmup_steps,
            settings.num_train_epochs, settings.per_device_train_batch_size, settings.weight_decay) == (
        2e-5, "cosine", 0.1, 100, 1.0, 8, 0.01)
    linear = validate_config(LMTrainConfig, {"training": {"lr_scheduler_type": "linear"}}).training
    assert linear.min_lr_rate is None  # the default floor belongs to the default cosine


@pytest.mark.parametrize("key, value, new", [
    ("batch_size", 4, "training.per_device_train_batch_size"),
    ("grad_accum", 2, "training.gradient_accumulation_steps"),
    ("learning_rate", 1e-3, "training.learning_rate"),
    ("min_lr_ratio", 0.1, "training.min_lr_rate"),
    ("liger", False, "training.use_liger_kernel"),
])
def test_old_top_level_trainer_keys_name_their_new_place(key, value, new, assets, tmp_path, run_cli):
    config = tmp_path / "cpt.yaml"
    config.write_text(yaml.safe_dump(train_config(assets["model"], assets["corpus"], tmp_path / "run")))
    code, _, err = run_cli("lm", "train", config, f"{key}={value}")
    assert code == 2 and f"'{key}' is now '{new}'" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_fresh_run_never_overwrites_a_directory(assets, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="already exists"):
        train(make(assets, tmp_path / "run", resume="never"))
    with pytest.raises(RunDirError, match="no config.yaml"):
        train(make(assets, tmp_path / "run", resume="auto"))


def test_cli_reports_errors_without_traceback(assets, tmp_path, run_cli):
    config = tmp_path / "cpt.yaml"
    config.write_text(yaml.safe_dump(train_config(assets["model"], tmp_path / "missing", tmp_path / "run")))
    code, _, err = run_cli("lm", "train", config)
    assert code == 2 and "prepared corpus not found" in err and "Traceback" not in err


def test_a_gguf_file_is_a_model_to_continue_pretraining(tmp_path, monkeypatch):
    monkeypatch.setenv("ADAPTLAB_CACHE_DIR", str(tmp_path / "cache"))
    gguf = write_tiny_gguf(tmp_path / "tiny.gguf", tensor_type="Q8_0")
    corpus = write_prepared_corpus(tmp_path / "corpus", Path(resolve_model(str(gguf))))
    run, metrics = train(validate_config(LMTrainConfig, train_config(gguf, corpus, tmp_path / "run", max_steps=2,
                                                                     save_steps=2, eval_steps=2)))
    assert metrics["model"] == str(gguf) and (run.model / "model.safetensors").is_file()
    assert math.isfinite(metrics["final_eval_domain_perplexity"])
