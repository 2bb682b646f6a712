"""The training layer's core: TrainerSettings, the one TrainingArguments builder, families, StrategyTrainer groups."""

from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertForTokenClassification, LlamaConfig, LlamaForCausalLM

from adaptlab.config import validate_config
from adaptlab.errors import ConfigError
from adaptlab.tuning.families import CAUSAL_LM, ENCODER_TOKEN
from adaptlab.tuning.settings import TrainerSettings, training_arguments
from adaptlab.tuning.strategies.base import Strategy
from adaptlab.tuning.trainer import StrategyTrainer, weighted_causal_lm_loss


def tiny_bert() -> BertForTokenClassification:
    torch.manual_seed(0)
    return BertForTokenClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=3,
                                                 num_attention_heads=2, intermediate_size=24, num_labels=3))


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2))


# ------------------------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("old", "new"), [("epochs", "num_train_epochs"), ("batch_size", "per_device_train_batch_size"),
                                          ("grad_accum", "gradient_accumulation_steps"), ("warmup", "warmup_steps")])
def test_an_old_key_names_the_new_one(old, new):
    with pytest.raises(ConfigError) as caught:
        validate_config(TrainerSettings, {old: 3})
    assert f"'{old}' is now '{new}'" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unknown_keys_and_trainer_args_are_checked():
    with pytest.raises(ConfigError, match="unknown key 'learning_rat'"):
        validate_config(TrainerSettings, {"learning_rat": 1e-4})
    with pytest.raises(ConfigError, match="'optimm' is not a transformers.TrainingArguments field"):
        validate_config(TrainerSettings, {"trainer_args": {"optimm": "sgd"}})
    with pytest.raises(ConfigError, match="set training.learning_rate, not training.trainer_args.learning_rate"):
        validate_config(TrainerSettings, {"trainer_args": {"learning_rate": 1.0}})
    with pytest.raises(ConfigError, match="min_lr_rate applies to lr_scheduler_type: cosine"):
        validate_config(TrainerSettings, {"min_lr_rate": 0.1})


def test_the_builder_passes_settings_trainer_args_and_decisions(tmp_path):
    settings = TrainerSettings(learning_rate=3e-4, warmup_steps=0.25, report_to="tensorboard", run_name="exp-1",
                               lr_scheduler_type="cosine", min_lr_rate=0.1,
                               trainer_args={"optim": "sgd", "label_smoothing_factor": 0.1})
    args = training_arguments(settings, tmp_path, save_strategy="no")
    assert (args.learning_rate, args.warmup_steps, args.run_name) == (3e-4, 0.25, "exp-1")
    assert args.report_to == ["tensorboard"]
    assert args.optim == "sgd" and args.label_smoothing_factor == 0.1
    assert args.lr_scheduler_type == "cosine_with_min_lr" and args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert args.bf16 is False  # auto on a machine without CUDA bf16
    with pytest.raises(ConfigError, match="trainer_args.save_strategy is set by adaptlab"):
        training_arguments(TrainerSettings(trainer_args={"save_strategy": "steps"}), tmp_path, save_strategy="no")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_bf16_true_without_cuda_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="training.bf16: true"):
        training_arguments(TrainerSettings(bf16=True), tmp_path)


# ------------------------------------------------------------------------------------------- families


def test_families_find_embeddings_layers_and_head():
    bert, llama = tiny_bert(), tiny_llama()
    assert len(ENCODER_TOKEN.layers(bert)) == 3 and len(CAUSAL_LM.layers(llama)) == 2
    assert ENCODER_TOKEN.head_module_names(bert) == ["classifier"]
    where = ENCODER_TOKEN.positions(bert)
    assert where[id(bert.bert.embeddings.word_embeddings.weight)] == "embeddings"
    assert where[id(bert.bert.encoder.layer[2].output.dense.weight)] == 2
    assert where[id(bert.classifier.weight)] == "head"
    llama_where = CAUSAL_LM.positions(llama)
    assert llama_where[id(llama.model.norm.weight)] == "head"
    assert llama_where[id(llama.model.layers[0].self_attn.q_proj.weight)] == 0


def test_layers_not_found_is_a_config_error():
    model = tiny_bert()
    model.config.num_hidden_layers = 7  # no list of 7 blocks anywhere
    with pytest.raises(ConfigError, match="cannot find the transformer layers of BertForTokenClassification"):
        ENCODER_TOKEN.layers(model)


# ------------------------------------------------------------------------------------------- trainer


class HeadTimesTen(Strategy):
    name = "head_times_ten"

    def lr_scale(self, model):
        return {id(p): 10.0 for p in model.classifier.parameters()}


def test_optimizer_groups_follow_the_strategy_factors(tmp_path):
    model = tiny_bert()
    args = training_arguments(TrainerSettings(learning_rate=1e-3, weight_decay=0.01), tmp_path)
    trainer = StrategyTrainer(model=model, args=args, strategies=[HeadTimesTen(None, ENCODER_TOKEN)])
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert lr_of[id(model.classifier.weight)] == pytest.approx(1e-2)
    assert lr_of[id(model.bert.encoder.layer[0].output.dense.weight)] == pytest.approx(1e-3)
    decay_of = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay_of[id(model.classifier.bias)] == 0.0 and decay_of[id(model.classifier.weight)] == 0.01
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


def test_weighted_loss_with_unit_weights_is_the_models_own_loss():
    model = tiny_llama()
    ids = torch.randint(0, 50, (3, 9), generator=torch.Generator().manual_seed(2))
    labels = ids.clone()
    labels[:, :3] = -100
    labels[2, 6:] = -100
    out = model(input_ids=ids, labels=labels)
    ours = weighted_causal_lm_loss(out.logits, labels, torch.ones_like(labels, dtype=torch.float))
    assert ours.item() == pytest.approx(out.loss.item(), abs=1e-6)
    zero = weighted_causal_lm_loss(out.logits, labels, torch.zeros_like(labels, dtype=torch.float))
    assert zero.item() == 0.0 and zero.requires_grad


class TeacherColumn(Strategy):
    """A strategy with an extra dataset column: it halves the task loss and adds the column's mean as a term."""

    name = "teacher_column"
    extra_columns = ("teacher_score",)

    def __init__(self):
        super().__init__(None, ENCODER_TOKEN)
        self.seen: list[float] = []

    def task_loss_weight(self):
        return 0.5

    def loss_terms(self, model, inputs, outputs):
        if "teacher_score" not in inputs:
            return {}
        self.seen.append(float(inputs["teacher_score"].float().mean()))
        return {"column": inputs["teacher_score"].float().mean() * 0.0 + 3.0}


def test_extra_columns_reach_the_loss_but_not_the_model_and_the_task_loss_is_weighted(tmp_path):
    model = tiny_bert().eval()  # no dropout: the two forward passes must agree
    args = training_arguments(TrainerSettings(learning_rate=1e-3), tmp_path)
    strategy = TeacherColumn()
    trainer = StrategyTrainer(model=model, args=args, strategies=[strategy])
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 3, (2, 6), generator=torch.Generator().manual_seed(1))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
             "teacher_score": torch.tensor([1.0, 2.0])}
    own = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
    loss = trainer.compute_loss(model, batch)  # forward() would refuse the unknown teacher_score keyword
    assert loss.item() == pytest.approx(0.5 * own.item() + 3.0, abs=1e-5)
    assert strategy.seen == [1.5]
    assert "teacher_score" in batch  # the caller's batch is not changed


def test_a_batch_without_any_gold_label_has_a_zero_task_loss_not_nan(tmp_path):
    model = tiny_bert()
    trainer = StrategyTrainer(model=model, args=training_arguments(TrainerSettings(), tmp_path))
    ids = torch.randint(1, 50, (2, 6), generator=torch.Generator().manual_seed(0))
    loss = trainer.compute_loss(model, {"input_ids": ids, "labels": torch.full_like(ids, -100)})
    assert loss.item() == 0.0 and loss.requires_grad
