"""``strategy.dynamic``: LISA's layer switching on the three families, DFT's loss checked against TRL's, refusals."""

from __future__ import annotations

from types import SimpleNamespace

import datasets
import pytest
import torch
from schedule_helpers import LAYERS, TASKS, strategy_trainer, tiny_data, tiny_model, train_and_watch
from transformers import default_data_collator

from adaptlab.errors import StrategyError
from adaptlab.tuning.families import FAMILIES
from adaptlab.tuning.strategies import StrategyBlock, prepare


@pytest.mark.parametrize("task", TASKS)
def test_lisa_trains_one_drawn_layer_per_period_and_always_the_embeddings_and_head(task, tmp_path):
    """1 of 3 layers, redrawn every 2 steps; seed 0 draws layer 1, then 0, then 2. A resting layer is bit-identical
    through its period (weight decay 0.1 would move it if the optimizer touched it, and so would the Adam moments
    of a layer that trained in an earlier period)."""
    block = {"dynamic": {"lisa": {"layers": 1, "switch_every": 2, "seed": 0}}}
    trainer, strategies, family = strategy_trainer(task, block, tmp_path, max_steps=6)
    moved = train_and_watch(trainer, family)
    assert moved == [{"embeddings", "head", layer} for layer in (1, 1, 0, 0, 2, 2)]
    periods = strategies[0].summary()["lisa"]["periods"]
    assert [(p["step"], p["layers"], p["embeddings"]) for p in periods] == [(0, [1], True), (2, [0], True),
                                                                           (4, [2], True)]
    assert all(p.requires_grad for p in trainer.model.parameters())


def test_lisa_draws_depend_on_seed_and_period_only():
    """So a run resumed at step 5 trains the layers an uninterrupted run would."""
    model = tiny_model("causal_lm")
    _, strategies = prepare(StrategyBlock.model_validate({"dynamic": {"lisa": {"layers": 2, "switch_every": 4}}}),
                            FAMILIES["causal_lm"], model)
    lisa = strategies[0]
    draws = [lisa.sampled(SimpleNamespace(global_step=step)) for step in range(12)]
    assert draws[:4] == [draws[0]] * 4 and draws[4:8] == [draws[4]] * 4
    assert all(len(d - {"embeddings", "head"}) == 2 and {"embeddings", "head"} <= d for d in draws)
    assert draws[5] == lisa.sampled(SimpleNamespace(global_step=5))


def test_lisa_composes_with_frozen_embeddings(tmp_path):
    block = {"layers": {"freeze_embeddings": True}, "dynamic": {"lisa": {"layers": 2, "switch_every": 10}}}
    trainer, _, family = strategy_trainer("sequence_classification", block, tmp_path, max_steps=2)
    moved = train_and_watch(trainer, family)
    assert moved[0] == moved[1] and "embeddings" not in moved[0] and len(moved[0] - {"head"}) == 2


@pytest.mark.parametrize("layers_section, key", [({"freeze_first": 1}, "freeze_first"),
                                                 ({"gradual_unfreezing": {"every": 1}}, "gradual_unfreezing")])
def test_lisa_conflicts_with_layer_freezing_schedules(layers_section, key):
    block = StrategyBlock.model_validate({"layers": layers_section, "dynamic": {"lisa": {"layers": 1}}})
    with pytest.raises(StrategyError, match=f"strategy.dynamic: lisa and layers.{key} both decide which layers"):
        prepare(block, FAMILIES["causal_lm"], tiny_model("causal_lm"))


@pytest.mark.parametrize("count", [LAYERS, LAYERS + 1])
def test_lisa_needs_fewer_layers_than_the_model_has(count):
    block = StrategyBlock.model_validate({"dynamic": {"lisa": {"layers": count}}})
    with pytest.raises(StrategyError, match=f"lisa.layers is {count} but .* has 3 transformer layers"):
        prepare(block, FAMILIES["token_classification"], tiny_model("token_classification"))


def test_lisa_on_a_model_without_findable_layers_is_refused():
    model = tiny_model("causal_lm")
    model.config.num_hidden_layers = 9
    with pytest.raises(StrategyError, match="strategy.dynamic: cannot find the transformer layers"):
        prepare(StrategyBlock.model_validate({"dynamic": {"lisa": {"layers": 1}}}), FAMILIES["causal_lm"], model)


@pytest.mark.parametrize("task", ["token_classification", "sequence_classification"])
def test_dft_on_an_encoder_is_refused(task):
    with pytest.raises(StrategyError, match="strategy.dynamic: loss: dft reweights a causal LM's next-token loss"):
        prepare(StrategyBlock.model_validate({"dynamic": {"loss": "dft"}}), FAMILIES[task], tiny_model(task))


def micro_batches() -> list[dict[str, torch.Tensor]]:
    """Two micro-batches of 3 right-padded rows, the first 3 tokens of each a prompt (label -100)."""
    rows = tiny_data("causal_lm", rows=6, seed=3)
    batches = [default_data_collator([rows[i] for i in range(start, start + 3)]) for start in (0, 3)]
    assert all((b["attention_mask"] == 0).any() for b in batches), "the batches should contain padding"
    return batches


def loss_and_grads(trainer, model, batch, num_items_in_batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = trainer.compute_loss(model, batch, num_items_in_batch=num_items_in_batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_dft_loss_and_gradients_match_trl(tmp_path, tokenizer):
    """Our DFT (StrategyTrainer + token_loss_factor) against TRL 1.16's ``SFTTrainer(loss_type="dft")`` on the same
    model and micro-batches: TRL divides ``sum_t -log p_t * sg(p_t)`` by ``num_items_in_batch`` (the target tokens
    of the whole accumulated batch, counted over the shifted labels), or by the micro-batch's target tokens when it
    is None; we do the same, so loss and gradients agree to float rounding, in both cases (measured: losses
    within 5e-9 of each other, about 4e-7 relative; gradients within 9e-7 of each tensor's largest entry)."""
    pytest.importorskip("trl", reason="trl (the dev extra) is not installed; the DFT loss is checked against TRL's")
    from trl import SFTConfig, SFTTrainer

    model = tiny_model("causal_lm")
    with torch.no_grad():
        model.lm_head.weight.mul_(30)  # token probabilities from ~0 to ~1, so the DFT factor matters
    ours, _, _ = strategy_trainer("causal_lm", {"dynamic": {"loss": "dft"}}, tmp_path / "ours", model=model)
    theirs = SFTTrainer(model=model, processing_class=tokenizer,
                        args=SFTConfig(output_dir=str(tmp_path / "trl"), loss_type="dft", report_to="none",
                                       bf16=False),
                        train_dataset=datasets.Dataset.from_dict({"input_ids": [[5, 6, 7, 8]]}))
    model.train()
    batches = micro_batches()
    accumulated = ours._get_num_items_in_batch(batches, torch.device("cpu"))
    assert accumulated == theirs._get_num_items_in_batch(batches, torch.device("cpu"))
    for batch in batches:
        for num_items in (accumulated, None):
            our_loss, our_grads = loss_and_grads(ours, model, batch, num_items)
            trl_loss, trl_grads = loss_and_grads(theirs, model, batch, num_items)
            torch.testing.assert_close(our_loss, trl_loss, rtol=1e-6, atol=0)
            for ours_grad, trl_grad in zip(our_grads, trl_grads):  # to 1e-5 of the tensor's largest entry
                torch.testing.assert_close(ours_grad, trl_grad, rtol=0, atol=1e-5 * trl_grad.abs().max().item())
    # and by hand, for the first micro-batch: sum_t p_t CE_t / N (which is not the plain NLL)
    batch = batches[0]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        targets = batch["labels"][:, 1:]
        log_p = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp_min(0)[..., None])[..., 0]
        mask = targets != -100
        by_hand = (-log_p * log_p.exp())[mask].sum() / mask.sum()
        nll = (-log_p)[mask].mean()
    our_loss = ours.compute_loss(model, batch).detach()
    torch.testing.assert_close(our_loss, by_hand, rtol=1e-6, atol=0)
    assert abs(our_loss - nll) > 0.1 * nll
