"""strategy.peft: LoRA (and rsLoRA, DoRA, PiSSA, OLoRA, LoRA+), IA3, prompt and prefix tuning on tiny random
models, trained with StrategyTrainer, saved merged or as an adapter, loaded back with models.adapters."""

from __future__ import annotations

import json
import logging
import sys
import types

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    default_data_collator,
)

from adaptlab.errors import ModelError, StrategyError
from adaptlab.models.adapters import is_adapter, load_pretrained
from adaptlab.tuning import strategies
from adaptlab.tuning.families import CAUSAL_LM, ENCODER_SEQUENCE, ENCODER_TOKEN
from adaptlab.tuning.settings import TrainerSettings, training_arguments
from adaptlab.tuning.strategies import StrategyBlock
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.strategies.peft import PeftStrategy, quantization_kwargs, resize_token_embeddings
from adaptlab.tuning.trainer import StrategyTrainer, finalize, summaries

VOCAB, ADDED, LENGTH, LABELS = 60, 4, 8, 3
ID2LABEL = {0: "O", 1: "B-X", 2: "I-X"}


# ------------------------------------------------------------------------------------------------ models, data

@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """Base checkpoints as a hub model would be: a BERT and a DeBERTa-v2 encoder without head, a Llama LM."""
    root = tmp_path_factory.mktemp("peft-bases")
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 37,
             "max_position_embeddings": 64}
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=VOCAB, **small)).save_pretrained(root / "bert")
    DebertaV2Model(DebertaV2Config(vocab_size=VOCAB, **small)).save_pretrained(root / "deberta")
    for name, tied in (("llama", False), ("llama-tied", True)):
        LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                     tie_word_embeddings=tied)).save_pretrained(root / name)
    return root


def load_task_model(bases, task, base="bert", added=0):
    torch.manual_seed(1)  # the random head
    if task == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(bases / base)
        if added:
            resize_token_embeddings(model, VOCAB + added)
        return model
    auto = AutoModelForTokenClassification if task == "token_classification" else AutoModelForSequenceClassification
    return auto.from_pretrained(bases / base, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})


def dataset(task, rows=16, vocab=VOCAB, seed=0):
    """Learnable random data: token label = id % 3, sequence label = first id % 3, LM: the ids themselves."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, LENGTH), generator=generator)
    if task == "token_classification":
        labels = ids % LABELS
    elif task == "sequence_classification":
        labels = ids[:, 0] % LABELS
    else:
        labels = ids
    return [{"input_ids": i, "attention_mask": torch.ones(LENGTH, dtype=torch.long), "labels": y}
            for i, y in zip(ids, labels)]


FAMILY = {"token_classification": ENCODER_TOKEN, "sequence_classification": ENCODER_SEQUENCE, "causal_lm": CAUSAL_LM}


def prepared(model, task, **section):
    block = StrategyBlock.model_validate({"peft": section})
    return strategies.prepare(block, FAMILY[task], model)


def trainer_for(model, chosen, task, tmp_path, learning_rate=5e-2, steps=6, vocab=VOCAB, **settings):
    settings = TrainerSettings(**{"learning_rate": learning_rate, "max_steps": steps, "per_device_train_batch_size": 4,
                                  "logging_steps": 100, "progress": False, "bf16": False, "seed": 0, **settings})
    return StrategyTrainer(model=model, args=training_arguments(settings, tmp_path / "trainer"),
                           train_dataset=dataset(task, vocab=vocab), data_collator=default_data_collator,
                           strategies=chosen, causal=task == "causal_lm")


def train(model, chosen, task, tmp_path, **kwargs):
    trainer = trainer_for(model, chosen, task, tmp_path, **kwargs)
    trainer.train()
    return trainer.model


def probe(task, vocab=VOCAB):
    batch = default_data_collator(dataset(task, rows=5, vocab=vocab, seed=7))
    return {k: v for k, v in batch.items() if k != "labels"}


@torch.no_grad()
def logits(model, inputs):
    return model.eval()(**inputs).logits


def save(model, directory):
    model.save_pretrained(directory)
    model.config.save_pretrained(directory)  # the task config (labels) beside an adapter, as the recipes do
    return directory


AUTO = {"token_classification": AutoModelForTokenClassification,
        "sequence_classification": AutoModelForSequenceClassification, "causal_lm": AutoModelForCausalLM}


# ------------------------------------------------------------------------------------------------- round trips

ROUND_TRIPS = [("token_classification", "bert", 0), ("sequence_classification", "bert", 0),
               ("sequence_classification", "deberta", 0), ("causal_lm", "llama", ADDED),
               ("causal_lm", "llama-tied", ADDED)]


@pytest.mark.parametrize("save_mode", ["adapter", "merged"])
@pytest.mark.parametrize(("task", "base", "added"), ROUND_TRIPS)
def test_lora_round_trip_reproduces_the_trained_model(bases, tmp_path, task, base, added, save_mode):
    model = load_task_model(bases, task, base, added)
    initial_new_rows = model.get_input_embeddings().weight[VOCAB:].detach().clone()
    model, chosen = prepared(model, task, r=4, save=save_mode)
    strategy = chosen[0]
    vocab = VOCAB + added
    trained = train(model, chosen, task, tmp_path, vocab=vocab)
    inputs = probe(task, vocab)
    expected = logits(trained, inputs)

    final = finalize(chosen, trained)
    assert strategy.summary()["adapter_unchanged"] is False
    directory = save(final, tmp_path / "saved")
    assert is_adapter(directory) == (save_mode == "adapter")
    reloaded = load_pretrained(directory, AUTO[task])
    assert "Peft" not in type(reloaded).__name__  # merged for inference
    delta = (logits(reloaded, inputs) - expected).abs().max().item()
    assert delta < 1e-4, f"reloaded logits differ by {delta}"
    if task != "causal_lm":
        assert reloaded.config.id2label == ID2LABEL
        # DeBERTa's pooler is outside its encoder: a randomly initialised head module, like the classifier
        assert strategy.saved_modules == (["pooler", "classifier"] if base == "deberta" else ["classifier"])
    if save_mode == "adapter":
        with safe_open(str(directory / "adapter_model.safetensors"), framework="pt") as saved:
            keys = list(saved.keys())
        for name in strategy.saved_modules:
            assert any(key.startswith(f"base_model.model.{name}.") and "lora_" not in key for key in keys), name
        assert set(strategy.saved_modules) <= set(json.loads((directory / "adapter_config.json").read_text())
                                                  ["modules_to_save"])
    if added:
        embeddings = reloaded.get_input_embeddings().weight
        assert embeddings.shape[0] == vocab
        assert not torch.equal(embeddings[VOCAB:], initial_new_rows)  # the added tokens' rows were trained
        assert strategy.saved_modules == (["model.embed_tokens"] if base == "llama-tied"
                                          else ["model.embed_tokens", "lm_head"])
        if base == "llama-tied":
            assert reloaded.lm_head.weight.data_ptr() == embeddings.data_ptr()


def test_train_embeddings_false_and_unresized_models_leave_embeddings_frozen(bases):
    resized = load_task_model(bases, "causal_lm", "llama", ADDED)
    _, chosen = prepared(resized, "causal_lm", r=4, train_embeddings=False)
    assert chosen[0].saved_modules == []
    plain = load_task_model(bases, "causal_lm", "llama")
    plain.resize_token_embeddings(VOCAB + ADDED)  # not through adaptlab's helper: auto cannot tell
    _, chosen = prepared(plain, "causal_lm", r=4)
    assert chosen[0].saved_modules == []
    forced = load_task_model(bases, "token_classification")
    _, chosen = prepared(forced, "token_classification", r=4, train_embeddings=True,
                           modules_to_save=["layer.1.output.LayerNorm"])
    assert chosen[0].saved_modules == ["classifier", "bert.embeddings.word_embeddings", "layer.1.output.LayerNorm"]


# ------------------------------------------------------------------------------------------ options, LoRA+

@pytest.mark.parametrize(("option", "attribute", "value"), [
    ({"use_rslora": True}, "use_rslora", True),
    ({"use_dora": True}, "use_dora", True),
    ({"init_lora_weights": "pissa"}, "init_lora_weights", "pissa"),
    ({"init_lora_weights": "olora"}, "init_lora_weights", "olora"),
    ({"init_lora_weights": "gaussian"}, "init_lora_weights", "gaussian"),
])
def test_lora_options_reach_the_peft_config(bases, option, attribute, value):
    model, _ = prepared(load_task_model(bases, "causal_lm", "llama"), "causal_lm", r=4, lora_alpha=8, **option)
    assert getattr(model.peft_config["default"], attribute) == value
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.scaling["default"] == pytest.approx(8 / 2 if option.get("use_rslora") else 8 / 4)
    if option.get("use_dora"):
        assert "default" in q_proj.lora_magnitude_vector
    if option.get("init_lora_weights") in ("pissa", "olora"):
        assert q_proj.lora_B["default"].weight.abs().sum() > 0  # these inits start with B != 0


def test_pissa_merged_round_trip(bases, tmp_path):
    model, chosen = prepared(load_task_model(bases, "causal_lm", "llama"), "causal_lm", r=4,
                             init_lora_weights="pissa")
    trained = train(model, chosen, "causal_lm", tmp_path)
    inputs = probe("causal_lm")
    expected = logits(trained, inputs)
    directory = save(finalize(chosen, trained), tmp_path / "saved")
    assert chosen[0].summary()["adapter_unchanged"] is False  # B moved away from its (nonzero) PiSSA init
    assert (logits(load_pretrained(directory, AutoModelForCausalLM), inputs) - expected).abs().max() < 1e-4


def test_loraplus_gives_lora_b_the_scaled_learning_rate(bases, tmp_path):
    model, chosen = prepared(load_task_model(bases, "sequence_classification"), "sequence_classification", r=4,
                             loraplus_lr_ratio=16)
    trainer = trainer_for(model, chosen, "sequence_classification", tmp_path, learning_rate=1e-3)
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    rates: dict[str, set[float]] = {"lora_A": set(), "lora_B": set(), "classifier": set()}
    for group in optimizer.param_groups:
        for param in group["params"]:
            for part in rates:
                if part in names[id(param)]:
                    rates[part].add(round(group["lr"], 12))
    assert rates == {"lora_A": {1e-3}, "lora_B": {16e-3}, "classifier": {1e-3}}
    plain, chosen = prepared(load_task_model(bases, "sequence_classification"), "sequence_classification", r=4)
    assert chosen[0].lr_scale(plain) == {}


# ------------------------------------------------------------------------------------- "no effect" detection

def test_untrained_adapter_is_reported_unchanged(bases, tmp_path, caplog):
    model, chosen = prepared(load_task_model(bases, "causal_lm", "llama"), "causal_lm", r=4)
    with caplog.at_level(logging.WARNING, logger="adaptlab"):
        finalize(chosen, model)  # zero steps
    assert summaries(chosen)["peft"]["adapter_unchanged"] is True
    assert "training changed nothing" in caplog.text


def test_tiny_learning_rate_is_reported_unchanged_and_a_real_run_is_not(bases, tmp_path, caplog):
    model, chosen = prepared(load_task_model(bases, "sequence_classification"), "sequence_classification", r=4)
    trained = train(model, chosen, "sequence_classification", tmp_path, learning_rate=1e-50, steps=2)
    assert chosen[0].summary()["adapter_unchanged"] is True  # checked before finalize too
    finalize(chosen, trained)
    assert chosen[0].summary()["adapter_unchanged"] is True
    model, chosen = prepared(load_task_model(bases, "sequence_classification"), "sequence_classification", r=4)
    trained = train(model, chosen, "sequence_classification", tmp_path, steps=2)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="adaptlab"):
        finalize(chosen, trained)
    assert chosen[0].summary()["adapter_unchanged"] is False
    assert "training changed nothing" not in caplog.text


def test_summary_counts_trainable_parameters(bases):
    model, chosen = prepared(load_task_model(bases, "token_classification"), "token_classification", r=4)
    summary = chosen[0].summary()
    # LoRA on the 6 linear layers of each of 2 blocks: r * (in + out) each; the classifier: 32 * 3 + 3
    linear = 2 * (4 * (32 + 32) * 4 + 4 * (32 + 37) * 2)
    assert summary["trainable_parameters"] == linear + 32 * LABELS + LABELS
    assert summary["total_parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["trainable_share"] == pytest.approx(summary["trainable_parameters"] / summary["total_parameters"])
    assert summary["method"] == "lora"


# --------------------------------------------------------------------------------------- IA3, prompt, prefix

@pytest.mark.parametrize("task", ["sequence_classification", "causal_lm"])
@pytest.mark.parametrize("method", ["ia3", "prompt_tuning"])
def test_ia3_and_prompt_tuning_train_save_and_reload(bases, tmp_path, task, method):
    base = "llama" if task == "causal_lm" else "bert"
    section = {"method": method, "save": "adapter" if method == "prompt_tuning" else "merged"}
    if method == "prompt_tuning":
        section["num_virtual_tokens"] = 3
    model, chosen = prepared(load_task_model(bases, task, base), task, **section)
    untouched = chosen[0].adapter_unchanged(model)
    trained = train(model, chosen, task, tmp_path)
    inputs = probe(task)
    expected = logits(trained, inputs)
    if method == "prompt_tuning" and task == "causal_lm":
        assert expected.shape[1] == LENGTH + 3
    directory = save(finalize(chosen, trained), tmp_path / "saved")
    assert untouched is True and chosen[0].summary()["adapter_unchanged"] is False
    reloaded = load_pretrained(directory, AUTO[task])
    assert ("PeftModel" in type(reloaded).__name__) == (method == "prompt_tuning")  # virtual tokens stay apart
    assert (logits(reloaded, inputs) - expected).abs().max() < 1e-4


def test_prefix_tuning_on_token_classification_round_trip(bases, tmp_path):
    """Prefix tuning keeps the input length (P-Tuning v2 tags sequences this way), unlike prompt tuning."""
    task = "token_classification"
    model, chosen = prepared(load_task_model(bases, task), task, method="prefix_tuning", num_virtual_tokens=3,
                             save="adapter")
    trained = train(model, chosen, task, tmp_path)
    inputs = probe(task)
    expected = logits(trained, inputs)
    assert expected.shape[:2] == (5, LENGTH)
    directory = save(finalize(chosen, trained), tmp_path / "saved")
    assert chosen[0].summary()["adapter_unchanged"] is False
    assert (logits(load_pretrained(directory, AUTO[task]), inputs) - expected).abs().max() < 1e-4


# --------------------------------------------------------------------------------------------- refusals

def refusal(model, task, others=None, **section):
    block = StrategyBlock.model_validate({"peft": section})
    strategy = PeftStrategy(block.peft, FAMILY[task])
    with pytest.raises(StrategyError) as caught:
        strategy.check(model, others or {})
    assert str(caught.value).startswith("strategy.peft: ")
    return str(caught.value)


def test_prompt_tuning_on_token_classification_is_refused(bases):
    message = refusal(load_task_model(bases, "token_classification"), "token_classification",
                      method="prompt_tuning", save="adapter")
    assert "word labels" in message


def test_prefix_tuning_on_a_model_without_past_key_values_is_refused():
    model = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=2,
                                                                 hidden_dim=37, num_labels=LABELS))
    message = refusal(model, "sequence_classification", method="prefix_tuning", save="adapter")
    assert "past_key_values" in message and "DistilBertForSequenceClassification" in message


@pytest.mark.parametrize("method", ["prompt_tuning", "prefix_tuning"])
def test_merging_virtual_tokens_is_refused(bases, method):
    assert "save: adapter" in refusal(load_task_model(bases, "causal_lm", "llama"), "causal_lm", method=method)


def test_prompt_tuning_with_a_token_loss_factor_is_refused(bases):
    class Factor(Strategy):
        name = "dft"

        def token_loss_factor(self, logits, labels):
            return None

    message = refusal(load_task_model(bases, "causal_lm", "llama"), "causal_lm",
                      others={"dft": Factor(None, CAUSAL_LM)}, method="prompt_tuning", save="adapter")
    assert "dft" in message


def test_target_modules_matching_nothing_are_refused(bases):
    message = refusal(load_task_model(bases, "causal_lm", "llama"), "causal_lm", target_modules=["query", "value"])
    assert "matches no module" in message and "q_proj" in message  # it names the layers there are
    model = load_task_model(bases, "causal_lm", "llama")
    PeftStrategy(StrategyBlock.model_validate({"peft": {"target_modules": ["q_proj"]}}).peft, CAUSAL_LM).check(
        model, {})  # a real name passes
    assert "matches no module" in refusal(model, "causal_lm", target_modules=r".*\.attention\.query")


def test_modules_to_save_matching_nothing_are_refused(bases):
    message = refusal(load_task_model(bases, "token_classification"), "token_classification",
                      modules_to_save=["score_head"])
    assert "'score_head'" in message and "classifier" in message


def test_base_rewriting_inits_cannot_save_an_adapter(bases):
    message = refusal(load_task_model(bases, "causal_lm", "llama"), "causal_lm", init_lora_weights="pissa_niter_4",
                      save="adapter")
    assert "save: merged" in message


def test_tied_embeddings_need_lora_to_train(bases):
    model = load_task_model(bases, "causal_lm", "llama-tied", ADDED)
    assert "needs method lora" in refusal(model, "causal_lm", method="ia3")


def test_qlora_needs_bitsandbytes_and_cuda(bases, monkeypatch):
    model = load_task_model(bases, "causal_lm", "llama")
    block = StrategyBlock.model_validate({"peft": {"quantization": "4bit", "save": "adapter"}})
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails
    assert "bitsandbytes" in refusal(model, "causal_lm", quantization="4bit", save="adapter")
    with pytest.raises(StrategyError, match="bitsandbytes"):
        quantization_kwargs(block.peft)
    monkeypatch.setitem(sys.modules, "bitsandbytes", types.ModuleType("bitsandbytes"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA" in refusal(model, "causal_lm", quantization="8bit", save="adapter")
    with pytest.raises(StrategyError, match="CUDA"):
        quantization_kwargs(block.peft)
    assert quantization_kwargs(None) == {} and quantization_kwargs(StrategyBlock.model_validate(
        {"peft": {}}).peft) == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a backend, but the wrong model or save mode
    assert "loaded unquantised" in refusal(model, "causal_lm", quantization="4bit", save="adapter")
    assert "set save: adapter" in refusal(model, "causal_lm", quantization="4bit")
    encoder = load_task_model(bases, "token_classification")
    assert "for causal LMs" in refusal(encoder, "token_classification", quantization="4bit", save="adapter")


@pytest.mark.parametrize(("section", "message"), [
    ({"r": 0}, "greater than or equal to 1"),
    ({"lora_dropout": 1.0}, "less than 1"),
    ({"num_virtual_tokens": 0, "method": "prompt_tuning"}, "greater than or equal to 1"),
    ({"loraplus_lr_ratio": 0}, "greater than 0"),
    ({"method": "ia3", "use_dora": True}, "use_dora applies to method lora, not ia3"),
    ({"method": "prompt_tuning", "r": 8}, "r applies to method lora, not prompt_tuning"),
    ({"init_lora_weights": "eva"}, "init_lora_weights must be one of"),
    ({"method": "adalora"}, "method"),
])
def test_invalid_sections_are_config_errors(section, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        StrategyBlock.model_validate({"peft": section})


def test_labels_come_from_the_caller_when_no_config_is_beside_the_adapter(bases, tmp_path):
    model, chosen = prepared(load_task_model(bases, "token_classification"), "token_classification", r=4,
                             save="adapter")
    finalize(chosen, model).save_pretrained(tmp_path / "bare")  # adapter files only
    with pytest.raises(ModelError, match="does not fit its base model"):  # 2 labels by default, 3 saved
        load_pretrained(tmp_path / "bare", AutoModelForTokenClassification)
    loaded = load_pretrained(tmp_path / "bare", AutoModelForTokenClassification, id2label=ID2LABEL)
    assert loaded.config.id2label == ID2LABEL and loaded.classifier.out_features == LABELS


def test_end_to_end_from_a_strategy_block(bases, tmp_path):
    """The ``strategy:`` block as a config file gives it, through prepare, StrategyTrainer and finalize."""
    block = StrategyBlock.model_validate({"peft": {"method": "lora", "r": 4}})
    model, chosen = strategies.prepare(block, ENCODER_SEQUENCE, load_task_model(bases, "sequence_classification"))
    trainer = trainer_for(model, chosen, "sequence_classification", tmp_path, steps=12)
    data = dataset("sequence_classification")
    before = trainer.evaluate(data)["eval_loss"]
    trainer.train()
    assert trainer.evaluate(data)["eval_loss"] < before - 0.1
    summary = summaries(chosen)["peft"]
    assert summary["adapter_unchanged"] is False and 0 < summary["trainable_share"] < 0.2
    final = finalize(chosen, trainer.model)
    assert type(final).__name__ == "BertForSequenceClassification"  # save: merged is the default
    assert not any("lora" in name for name, _ in final.named_parameters())


def test_load_pretrained_names_a_missing_base(bases, tmp_path):
    model, chosen = prepared(load_task_model(bases, "token_classification"), "token_classification", r=4,
                             save="adapter")
    directory = save(finalize(chosen, model), tmp_path / "saved")
    config = json.loads((directory / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (directory / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="base_model_name_or_path"):
        load_pretrained(directory, AutoModelForTokenClassification)

