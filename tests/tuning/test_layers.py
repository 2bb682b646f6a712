"""``strategy.layers`` on a BERT tagger, a BERT classifier and a Llama (3 layers each): which parts move in each
optimizer step, the learning rate of every parameter, the gradual-unfreezing schedule, and the refusals."""

from __future__ import annotations

import pydantic
import pytest
import torch
from schedule_helpers import LAYERS, TASKS, build_trainer, strategy_trainer, tiny_model, train_and_watch

from adaptlab.errors import StrategyError
from adaptlab.tuning.families import FAMILIES
from adaptlab.tuning.strategies import StrategyBlock, prepare

EVERYTHING = {"embeddings", "head", *range(LAYERS)}


@pytest.mark.parametrize("task", TASKS)
def test_frozen_embeddings_and_bottom_layers_never_move(task, tmp_path):
    trainer, _, family = strategy_trainer(task, {"layers": {"freeze_embeddings": True, "freeze_first": 2}}, tmp_path,
                                          max_steps=3)
    assert train_and_watch(trainer, family) == [{"head", 2}] * 3


@pytest.mark.parametrize("task", TASKS)
def test_without_the_strategy_everything_moves(task, tmp_path):
    """The control for the test above: the same run without ``layers`` moves every part in every step."""
    trainer, _, family = strategy_trainer(task, {}, tmp_path, max_steps=2)
    assert train_and_watch(trainer, family) == [EVERYTHING] * 2


@pytest.mark.parametrize("task", TASKS)
def test_layerwise_lr_decay_and_head_multiplier_set_each_parameters_lr(task, tmp_path):
    """lr(head) = eta m, lr(layer i) = eta xi^(L-1-i), lr(embeddings) = eta xi^L, read from the optimizer's groups."""
    eta, xi, m = 1e-2, 0.8, 5.0
    trainer, _, family = strategy_trainer(task, {"layers": {"lr_decay": xi, "head_lr_multiplier": m}}, tmp_path)
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    positions = family.positions(trainer.model)
    expected = {"head": eta * m, "embeddings": eta * xi ** LAYERS, **{i: eta * xi ** (LAYERS - 1 - i)
                                                                    for i in range(LAYERS)}}
    assert len(lr_of) == sum(1 for _ in trainer.model.parameters())
    for param in trainer.model.parameters():
        assert lr_of[id(param)] == pytest.approx(expected[positions[id(param)]], rel=1e-12)
    # the numbers themselves, for 3 layers: top layer at eta, embeddings at eta * 0.8^3
    assert sorted({round(lr, 10) for lr in lr_of.values()}) == [0.00512, 0.0064, 0.008, 0.01, 0.05]


def test_head_multiplier_alone_leaves_the_body_at_the_base_rate(tmp_path):
    trainer, _, family = strategy_trainer("causal_lm", {"layers": {"head_lr_multiplier": 3.0}}, tmp_path)
    positions = family.positions(trainer.model)
    lr_of = {id(p): group["lr"] for group in trainer.create_optimizer().param_groups for p in group["params"]}
    assert {positions[key]: lr for key, lr in lr_of.items()} == {"head": 3e-2, "embeddings": 1e-2,
                                                                  **{i: 1e-2 for i in range(LAYERS)}}


@pytest.mark.parametrize("task", TASKS)
def test_gradual_unfreezing_by_steps(task, tmp_path):
    """Every 2 steps one more layer from the top; the embeddings last. A part that is not yet unfrozen is
    bit-identical (weight decay 0.1 would move it if the optimizer touched it), and it moves from its stage on."""
    block = {"layers": {"gradual_unfreezing": {"every": 2, "unit": "steps"}}}
    trainer, strategies, family = strategy_trainer(task, block, tmp_path, max_steps=10)
    moved = train_and_watch(trainer, family)
    stages = [{"head"}, {"head", 2}, {"head", 2, 1}, {"head", 2, 1, 0}, EVERYTHING]
    assert moved == [stage for stage in stages for _ in range(2)]
    assert strategies[0].summary()["gradual_unfreezing"]["stages"][1] == {"step": 2, "layers": [2],
                                                                          "embeddings": False}
    assert all(p.requires_grad for p in trainer.model.parameters())  # handed back as found


def test_gradual_unfreezing_by_epochs(tmp_path):
    """16 rows, batch 8: 2 steps per epoch, one more layer each epoch."""
    block = {"layers": {"gradual_unfreezing": {"every": 1, "unit": "epochs"}}}
    trainer, _, family = strategy_trainer("token_classification", block, tmp_path, max_steps=-1,
                                          num_train_epochs=5, per_device_train_batch_size=8)
    moved = train_and_watch(trainer, family)
    assert moved == [s for s in ({"head"}, {"head", 2}, {"head", 2, 1}, {"head", 2, 1, 0}, EVERYTHING)
                     for _ in range(2)]


def test_gradual_unfreezing_composes_with_the_freezes(tmp_path):
    """freeze_first / freeze_embeddings say what never trains, the schedule when the rest starts."""
    block = {"layers": {"freeze_first": 1, "freeze_embeddings": True,
                        "gradual_unfreezing": {"every": 1, "unit": "steps"}}}
    trainer, _, family = strategy_trainer("causal_lm", block, tmp_path, max_steps=6)
    assert train_and_watch(trainer, family) == [{"head"}, {"head", 2}, {"head", 2, 1}, {"head", 2, 1},
                                                {"head", 2, 1}, {"head", 2, 1}]


def test_freeze_first_holds_for_lora_matrices_added_after_prepare(tmp_path):
    """LoRA matrices a later strategy adds inside a frozen layer are frozen when training begins."""
    from peft import LoraConfig, get_peft_model

    model, strategies = prepare(StrategyBlock.model_validate({"layers": {"freeze_first": 1}}),
                                FAMILIES["sequence_classification"], tiny_model("sequence_classification"))
    model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"], task_type="SEQ_CLS"))
    lora = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}
    build_trainer("sequence_classification", model, strategies, tmp_path, max_steps=2).train()
    moved = {name for name, p in model.named_parameters() if name in lora and not torch.equal(p, lora[name])}
    assert moved == {name for name in lora if ".layer.0." not in name}
    assert len(moved) == 8  # query and value, A and B, in layers 1 and 2


def test_a_schedule_refuses_an_optimizer_without_its_parameters(tmp_path):
    """An optimizer built while the top layer was frozen could never train it after its unfreeze."""
    block = {"layers": {"gradual_unfreezing": {"every": 1, "unit": "steps"}}}
    trainer, _, _ = strategy_trainer("token_classification", block, tmp_path)
    top = list(trainer.model.bert.encoder.layer[2].parameters())
    for param in top:
        param.requires_grad_(False)
    trainer.create_optimizer()
    for param in top:
        param.requires_grad_(True)
    with pytest.raises(StrategyError, match=r"strategy.layers: \d+ trainable parameters are not in the optimizer"):
        trainer.train()


def test_freeze_first_beyond_the_layers_is_refused():
    with pytest.raises(StrategyError, match="strategy.layers: freeze_first is 5 but .* has 3 transformer layers"):
        prepare(StrategyBlock.model_validate({"layers": {"freeze_first": 5}}), FAMILIES["causal_lm"],
                tiny_model("causal_lm"))


def test_lr_decay_on_a_model_without_findable_layers_is_refused():
    model = tiny_model("token_classification")
    model.config.num_hidden_layers = 7  # no list of 7 blocks: the family cannot tell where the layers are
    with pytest.raises(StrategyError, match="strategy.layers: cannot find the transformer layers"):
        prepare(StrategyBlock.model_validate({"layers": {"lr_decay": 0.8}}), FAMILIES["token_classification"], model)


@pytest.mark.parametrize("section", [{"lr_decay": 0.0}, {"lr_decay": 1.5}, {"head_lr_multiplier": 0},
                                     {"freeze_first": -1}, {"gradual_unfreezing": {"every": 0}},
                                     {"gradual_unfreezing": {"every": 2, "unit": "batches"}}, {"lr_decya": 0.8}])
def test_bad_values_are_config_errors(section):
    with pytest.raises(pydantic.ValidationError):
        StrategyBlock.model_validate({"layers": section})
