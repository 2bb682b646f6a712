"""The shared-encoder model: batches go to their task's head, parameters are stored once, the strategies' family
finds its layers, and a batch holding two tasks is refused."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from adaptlab.tuning.multitask.fit import TaskCollator
from adaptlab.tuning.multitask.model import SHARED_ENCODER, HeadSpec, MultitaskModel, load_encoder

SPECS = [HeadSpec("tags", "token_classification", ("O", "B-X", "I-X")),
         HeadSpec("topic", "sequence_classification", ("a", "b")),
         HeadSpec("tagsets", "sequence_classification", ("p", "q", "r"), multi_label=True)]


@pytest.fixture
def model(tiny_bert_dir):
    torch.manual_seed(0)
    return MultitaskModel(load_encoder(str(tiny_bert_dir)), SPECS).eval()


def test_each_task_runs_its_own_head_on_the_shared_encoder(model):
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 2178, 102, 0]])
    mask = (ids != 0).long()
    shapes = [model(ids, mask, task=torch.tensor([i, i])).logits.shape for i in range(3)]
    assert shapes == [(2, 4, 3), (2, 2), (2, 3)]
    for view in model.views:
        assert view.base_model is model.encoder
    loss = model(ids, mask, labels=torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), task=torch.tensor([2, 2])).loss
    assert loss.item() > 0  # the multi-label head takes multi-hot targets (BCE)
    with pytest.raises(ValueError, match="one task"):
        model(ids, mask, task=torch.tensor([0, 1]))


def test_parameters_are_stored_once_and_the_family_finds_the_encoder(model, tmp_path):
    state = model.state_dict()
    assert len({t.data_ptr() for t in state.values()}) == len(state)  # no tensor twice (shared encoder)
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    heads = {id(p) for head in model.heads for p in head.parameters()}
    assert len(heads) == 2 * 3  # each task's classifier: weight and bias
    positions = SHARED_ENCODER.positions(model)
    assert len(SHARED_ENCODER.layers(model)) == 2
    assert all(positions[key] == "head" for key in heads)
    assert {positions[id(p)] for p in model.encoder.pooler.parameters()} == {"head"}  # as in a BERT classifier
    assert {positions[id(p)] for p in model.encoder.embeddings.parameters()} == {"embeddings"}
    model.activation_checkpointing_enable()
    assert model.encoder.is_activation_checkpointing


def test_the_collator_pads_one_task_and_refuses_a_mixed_batch(tokenizer):
    from transformers import DataCollatorWithPadding

    collate = TaskCollator([None, DataCollatorWithPadding(tokenizer)])
    batch = collate([{"input_ids": [101, 7, 102], "attention_mask": [1, 1, 1], "labels": 1, "task": 1},
                     {"input_ids": [101, 102], "attention_mask": [1, 1], "labels": 0, "task": 1}])
    assert batch["input_ids"].shape == (2, 3) and batch["task"].tolist() == [1, 1]
    with pytest.raises(ValueError, match="one task"):
        collate([{"input_ids": [101], "attention_mask": [1], "labels": 0, "task": 0},
                 {"input_ids": [101], "attention_mask": [1], "labels": 0, "task": 1}])
