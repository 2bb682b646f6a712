"""The weighted causal loss over the accumulated batch (StrategyTrainer): ``sum w CE / sum w`` per optimizer step.

One SGD step on a tiny Llama, over 8 rows of uneven lengths and uneven weights: gradient accumulation 4 x batch 2
must give the same parameters as batch 8, which it does only because the weights are summed over every
micro-batch of the step before any of them is divided (normalising each micro-batch by its own weights, as the
old FRACTAL trainer did, gives other parameters; the test shows that too, so it can fail).
"""

from __future__ import annotations

import random

import pytest
import torch
from train_helpers import tiny_tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from adaptlab.lm.packing import IGNORE_INDEX, PackedCollator
from adaptlab.tuning.settings import TrainerSettings, training_arguments
from adaptlab.tuning.trainer import StrategyTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = len(tiny_tokenizer())


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0)
    return LlamaForCausalLM(config)


def rows(weighted: bool = True, uniform: bool = False) -> list[dict]:
    """8 rows of 4 to 19 tokens; a prompt of 1-3 tokens is not a target; weights in {0, 0.25 .. 3} or all 1."""
    rng = random.Random(7)
    out = []
    for _ in range(8):
        length, prompt = rng.randint(4, 19), rng.randint(1, 3)
        ids = [rng.randrange(4, VOCAB) for _ in range(length)]
        labels = [IGNORE_INDEX] * prompt + ids[prompt:]
        weights = [0.0] * prompt + [1.0 if uniform else rng.choice([0.0, 0.25, 1.0, 3.0]) for _ in ids[prompt:]]
        labels = [label if w > 0 else IGNORE_INDEX for label, w in zip(labels, weights, strict=True)]
        row = {"input_ids": ids, "position_ids": list(range(length)), "labels": labels}
        if weighted:
            row["weights"] = weights
        out.append(row)
    return out


class PerMicroBatch(StrategyTrainer):
    """The old behaviour: each micro-batch divided by its own weight sum, then by the accumulation steps."""

    def _get_num_items_in_batch(self, batch_samples, device):
        return None


def one_sgd_step(data: list[dict], batch: int, accumulation: int, trainer_class=StrategyTrainer,
                 tmp_path=None) -> dict[str, torch.Tensor]:
    settings = TrainerSettings(learning_rate=0.5, max_steps=1, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=accumulation, lr_scheduler_type="constant",
                               warmup_steps=0, max_grad_norm=0, progress=False, trainer_args={"optim": "sgd"})
    args = training_arguments(settings, tmp_path / f"{trainer_class.__name__}-{batch}x{accumulation}",
                              save_strategy="no", use_cache=False, use_cpu=True)
    trainer = trainer_class(model=tiny_llama(), args=args, train_dataset=data, data_collator=PackedCollator(0),
                            causal=True)
    trainer.train()
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


def max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max((a[name] - b[name]).abs().max().item() for name in a)


def test_accumulated_micro_batches_step_like_one_batch(tmp_path):
    data = rows()
    start = {name: p.detach().clone() for name, p in tiny_llama().named_parameters()}
    whole = one_sgd_step(data, batch=8, accumulation=1, tmp_path=tmp_path)
    accumulated = one_sgd_step(data, batch=2, accumulation=4, tmp_path=tmp_path)
    assert max_difference(whole, start) > 1e-3  # the step moved the parameters
    assert max_difference(accumulated, whole) < 1e-6
    per_micro_batch = one_sgd_step(data, batch=2, accumulation=4, trainer_class=PerMicroBatch, tmp_path=tmp_path)
    assert max_difference(per_micro_batch, whole) > 1e-4  # the old normalisation is another update


def test_with_all_weights_one_the_loss_is_the_models_own(tmp_path):
    data = rows(uniform=True)
    batch = PackedCollator(0)(data)
    model = tiny_llama().eval()
    args = training_arguments(TrainerSettings(progress=False), tmp_path / "eval", use_cpu=True)
    trainer = StrategyTrainer(model=model, args=args, data_collator=PackedCollator(0), causal=True)
    with torch.no_grad():
        ours = trainer.compute_loss(model, batch)
        own = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"]).loss
    assert ours.item() == pytest.approx(own.item(), rel=1e-6)
    # over an accumulated step too: weights of 1 train exactly as rows without a weights column
    with_ones = one_sgd_step(data, batch=2, accumulation=4, tmp_path=tmp_path / "ones")
    without = one_sgd_step(rows(weighted=False, uniform=True), batch=2, accumulation=4, tmp_path=tmp_path / "none")
    assert max_difference(with_ones, without) < 1e-6


def test_uneven_weights_change_the_loss(tmp_path):
    """Guard against a vacuous pass: the weighted and unweighted losses of the same batch differ."""
    weighted, plain = PackedCollator(0)(rows()), PackedCollator(0)(rows(weighted=False))
    model = tiny_llama().eval()
    args = training_arguments(TrainerSettings(progress=False), tmp_path / "eval", use_cpu=True)
    trainer = StrategyTrainer(model=model, args=args, data_collator=PackedCollator(0), causal=True)
    with torch.no_grad():
        assert abs(trainer.compute_loss(model, weighted).item() - trainer.compute_loss(model, plain).item()) > 1e-3
