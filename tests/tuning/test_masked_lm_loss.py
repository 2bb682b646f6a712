"""strategy.domain's masked-LM loss on the masked positions only: the same loss and gradients as the model's own
loss over full logits, for every family whose head is found by name, and the full-logits path for one whose head
is not; strategies' transforms, task-loss weights and loss terms apply as in every trainer."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForMaskedLM,
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ElectraConfig,
    ElectraForMaskedLM,
    MPNetConfig,
    MPNetForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
    TrainingArguments,
)

from adaptlab.tuning.masked_lm_loss import MaskedLMTrainer, masked_lm_head
from adaptlab.tuning.strategies.base import Strategy

VOCAB = 97
SMALL = {"vocab_size": VOCAB, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 24, "max_position_embeddings": 40}
MODELS = {
    "bert": lambda: BertForMaskedLM(BertConfig(**SMALL)),
    "roberta": lambda: RobertaForMaskedLM(RobertaConfig(**SMALL, pad_token_id=1)),
    "mpnet": lambda: MPNetForMaskedLM(MPNetConfig(**SMALL)),
    "albert": lambda: AlbertForMaskedLM(AlbertConfig(**SMALL, embedding_size=8)),
    "distilbert": lambda: DistilBertForMaskedLM(DistilBertConfig(vocab_size=VOCAB, dim=16, n_layers=2, n_heads=2,
                                                                 hidden_dim=24, max_position_embeddings=40)),
}


def batch(seed: int, rows: int = 3, length: int = 11) -> dict[str, torch.Tensor]:
    """Random ids with about 15 % of the positions labelled (at least one a row) and the last two padded."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (rows, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:, -2:] = 0
    chosen = (torch.rand((rows, length), generator=generator) < 0.15) & attention_mask.bool()
    chosen[:, 1] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def trainer_for(model: torch.nn.Module, tmp_path, strategies: list[Strategy] | None = None) -> MaskedLMTrainer:
    arguments = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True)
    return MaskedLMTrainer(model=model, args=arguments, strategies=strategies)


def loss_and_grads(compute) -> tuple[float, list[torch.Tensor]]:
    model, loss = compute()
    model.zero_grad()
    loss.backward()
    return loss.item(), [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_loss_and_gradients_equal_the_models_own_full_logits_loss(family, tmp_path):
    torch.manual_seed(0)
    model = MODELS[family]().train()
    inputs = batch(seed=1)
    trainer = trainer_for(model, tmp_path)
    assert masked_lm_head(model) is not None

    torch.manual_seed(5)  # the same dropout masks in both passes
    reference, reference_grads = loss_and_grads(lambda: (model, model(**inputs).loss))
    torch.manual_seed(5)
    ours, grads = loss_and_grads(lambda: (model, trainer.compute_loss(model, dict(inputs))))
    _, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
    assert tuple(outputs.logits.shape) == (int((inputs["labels"] != -100).sum()), VOCAB)  # the masked ones only

    assert ours == pytest.approx(reference, rel=1e-6, abs=1e-6)
    for mine, theirs in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_outside_the_trainers_loss_the_model_scores_every_position(tmp_path):
    model = MODELS["bert"]()
    inputs = batch(seed=2)
    trainer = trainer_for(model, tmp_path)
    trainer.compute_loss(model, dict(inputs))
    assert model(**inputs).logits.shape == (*inputs["input_ids"].shape, VOCAB)  # the hook is idle again


def test_a_step_total_over_accumulated_batches_divides_by_the_steps_masked_tokens(tmp_path):
    model = MODELS["bert"]().eval()
    inputs = batch(seed=3)
    trainer = trainer_for(model, tmp_path)
    masked = int((inputs["labels"] != -100).sum())
    mean = trainer.compute_loss(model, dict(inputs))
    over_step = trainer.compute_loss(model, dict(inputs), num_items_in_batch=torch.tensor(4 * masked))
    assert float(over_step) == pytest.approx(float(mean) / 4, rel=1e-6)
    assert trainer.loss_is_scaled_for_ga is True


def test_a_model_whose_head_has_another_name_gets_its_own_loss(tmp_path):
    config = ElectraConfig(vocab_size=VOCAB, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=24, max_position_embeddings=40)
    model = ElectraForMaskedLM(config).eval()
    inputs = batch(seed=4)
    trainer = trainer_for(model, tmp_path)
    assert masked_lm_head(model) is None and trainer.masked_positions is None
    assert float(trainer.compute_loss(model, dict(inputs))) == pytest.approx(float(model(**inputs).loss), rel=1e-6)


class HalfTaskLoss(Strategy):
    """Weighs the task loss by a half and records the training batches it sees."""

    name = "test-half"

    def __init__(self):
        super().__init__(config=None, family=None)
        self.seen: list[dict] = []

    def transform_inputs(self, model, inputs):
        self.seen.append(inputs)
        return inputs

    def task_loss_weight(self) -> float:
        return 0.5


class MeanLogitTerm(HalfTaskLoss):
    """... and adds the mean of every position's logits, so it needs the full outputs."""

    def loss_terms(self, model, inputs, outputs):
        return {"mean_logit": outputs.logits.mean()}


def no_dropout_bert() -> BertForMaskedLM:
    torch.manual_seed(0)
    return BertForMaskedLM(BertConfig(**SMALL, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).train()


def test_strategies_without_loss_terms_keep_the_masked_positions_head_and_weigh_the_loss(tmp_path):
    model, strategy, inputs = no_dropout_bert(), HalfTaskLoss(), batch(seed=6)
    trainer = trainer_for(model, tmp_path, [strategy])
    loss, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
    assert trainer.masked_positions is not None and outputs.logits.dim() == 2
    assert float(loss) == pytest.approx(0.5 * float(model(**inputs).loss), rel=1e-6)
    assert len(strategy.seen) == 1  # the transform saw the training batch


def test_a_strategys_loss_terms_read_every_positions_logits(tmp_path):
    model, strategy, inputs = no_dropout_bert(), MeanLogitTerm(), batch(seed=7)
    trainer = trainer_for(model, tmp_path, [strategy])
    loss, outputs = trainer.compute_loss(model, dict(inputs), return_outputs=True)
    reference = model(**inputs)
    assert trainer.masked_positions is None and outputs.logits.shape == reference.logits.shape
    expected = 0.5 * float(reference.loss) + float(reference.logits.mean())
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert len(strategy.seen) == 1
