"""``strategy.distill`` on a causal LM (``tuning/distill/causal.py``), hook by hook, with a tiny Llama student and a
larger tiny Llama teacher: the tokenizer check, padding rows, the top-k cache against the live teacher, gradient
accumulation, on-policy batches and the KD term's weighting."""

from __future__ import annotations

import logging
import random
from types import SimpleNamespace

import datasets
import pytest
import torch
from distill_helpers import other_tokenizer, save_teacher
from train_helpers import save_tiny_llama, tiny_tokenizer
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from adaptlab.config import validate_config
from adaptlab.errors import ModelError, StrategyError
from adaptlab.lm.packing import IGNORE_INDEX, PackedCollator
from adaptlab.runs import LOGGER_NAME
from adaptlab.tuning.distill.causal import CausalDistiller
from adaptlab.tuning.distill.divergences import token_divergence, weighted_mean
from adaptlab.tuning.distill.teacher_cache import TOP_IDS
from adaptlab.tuning.families import CAUSAL_LM
from adaptlab.tuning.settings import TrainerSettings, training_arguments
from adaptlab.tuning.strategies import TaskData
from adaptlab.tuning.strategies.distill import Distill, DistillConfig
from adaptlab.tuning.trainer import StrategyTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VOCAB = len(tiny_tokenizer())


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    return {"student": save_tiny_llama(root / "student"), "teacher": save_teacher(root / "teacher"),
            "padded": save_teacher(root / "padded", rows=VOCAB + 8), "root": root}


def student(dirs) -> LlamaForCausalLM:
    return AutoModelForCausalLM.from_pretrained(dirs["student"])


def distiller(teacher, **config) -> CausalDistiller:
    return Distill(validate_config(DistillConfig, {"teacher": str(teacher), **config}), CAUSAL_LM)


def ready(dirs, tmp_path, teacher=None, model=None, **config) -> CausalDistiller:
    strategy = distiller(teacher or dirs["teacher"], **config)
    strategy.check(model or student(dirs), {})
    strategy.before_training(model or student(dirs), TaskData(tmp_path, tiny_tokenizer(), [], seed=3))
    return strategy


def rows(n: int = 6, weighted: bool = False, even: bool = False, seed: int = 5) -> list[dict]:
    """SFT-like rows: a prompt of 2-4 tokens (not targets), 2-11 target tokens, weights 0.5, 1 or 2; ``even``: all
    12 long with a prompt of 3, weights 1."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length, prompt = (12, 3) if even else (rng.randint(6, 13), rng.randint(2, 4))
        ids = [rng.randrange(4, VOCAB) for _ in range(length)]
        row = {"input_ids": ids, "position_ids": list(range(length)),
               "labels": [IGNORE_INDEX] * prompt + ids[prompt:]}
        if weighted:
            row["weights"] = [0.0] * prompt + [1.0 if even else rng.choice([0.5, 1.0, 2.0]) for _ in ids[prompt:]]
        out.append(row)
    return out


def forward(model, batch):
    return model(input_ids=batch["input_ids"], position_ids=batch["position_ids"])


# ------------------------------------------------------------------------------------------ refusals


def test_the_distill_section_dispatches_to_the_causal_distiller_and_refuses_encoder_fields(dirs):
    assert isinstance(distiller(dirs["teacher"]), CausalDistiller)
    with pytest.raises(StrategyError, match=r"strategy.distill: unlabeled, init_layers are for encoder students"):
        distiller(dirs["teacher"], unlabeled=["u.txt"], init_layers=[0, 1]).check(student(dirs), {})
    with pytest.raises(StrategyError, match="cache_teacher: true .* needs top_k"):
        distiller(dirs["teacher"], cache_teacher=True).check(student(dirs), {})
    distiller(dirs["teacher"]).check(student(dirs), {})  # the default cache_teacher without top_k: live teacher


@pytest.mark.parametrize(("kind", "named"), [
    ("swapped", "2 with another id (e.g. 'bond': 11 vs 12, 'yield': 12 vs 11)"),
    ("extra", "1 only in the teacher's (e.g. ['glacier'])"),
    ("eos", "eos_token '</s>' (id 3) in the student's vs '.' (id 4) in the teacher's"),
    ("splitting", "'The quick brown fox jumps over the lazy dog.' encodes to"),
])
def test_a_teacher_with_another_tokenizer_is_refused_naming_the_difference(dirs, tmp_path, kind, named):
    teacher = save_teacher(tmp_path / kind, tokenizer=other_tokenizer(kind))
    strategy = distiller(teacher)
    with pytest.raises(StrategyError) as caught:
        strategy.before_training(student(dirs), TaskData(tmp_path, tiny_tokenizer(), ["bond yield"]))
    message = str(caught.value)
    assert message.startswith(f"strategy.distill: the teacher {teacher} does not use the student's tokenizer")
    assert named in message and "\n" not in message
    assert strategy.teacher is None  # refused before its weights were loaded


def test_the_same_tokenizer_with_another_padding_token_is_accepted(dirs, tmp_path):
    """Padded positions are never targets, and students often get a pad token for training."""
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = "</s>"
    strategy = distiller(dirs["teacher"])
    strategy.before_training(student(dirs), TaskData(tmp_path, tokenizer, []))
    assert strategy.teacher is not None and not strategy.teacher.training
    assert not any(p.requires_grad for p in strategy.teacher.parameters())


def test_missing_and_unavailable_teachers_and_a_teacher_with_too_few_rows_are_refused(dirs, tmp_path):
    with pytest.raises(ModelError, match=f"strategy.distill.teacher: {tmp_path / 'nowhere'} does not exist"):
        distiller(tmp_path / "nowhere").before_training(student(dirs), TaskData(tmp_path, tiny_tokenizer(), []))
    with pytest.raises(StrategyError, match="cannot load the tokenizer of the teacher nobody/no-such-teacher"):
        distiller("nobody/no-such-teacher").before_training(student(dirs), TaskData(tmp_path, tiny_tokenizer(), []))
    short = save_teacher(tmp_path / "short", rows=VOCAB - 2)
    with pytest.raises(StrategyError, match=f"the teacher has {VOCAB - 2} output rows but the tokenizer has {VOCAB}"):
        distiller(short).before_training(student(dirs), TaskData(tmp_path, tiny_tokenizer(), []))


def test_padding_rows_are_trimmed_logged_and_the_loss_compares_the_common_rows(dirs, tmp_path, caplog):
    model = student(dirs)
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        strategy = ready(dirs, tmp_path, teacher=dirs["padded"], model=model, loss="jsd", temperature=1.5)
    assert f"the student has {VOCAB} output rows and the teacher {VOCAB + 8}" in caplog.text
    summary = strategy.summary()
    assert (summary["compared_rows"], summary["trimmed_rows"]) == (VOCAB, 8)
    batch = PackedCollator(0)(rows())
    with torch.no_grad():
        outputs = forward(model, batch)
        term = strategy.loss_terms(model, batch, outputs)["distill"]
        teacher = strategy.teacher(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    mask = batch["labels"][:, 1:] != IGNORE_INDEX
    expected = token_divergence(outputs.logits[:, :-1][mask], teacher[:, :-1, :VOCAB][mask], "jsd", 1.5).mean()
    assert teacher.shape[-1] == VOCAB + 8
    assert float(term) == pytest.approx(0.5 * 1.5 ** 2 * float(expected), rel=1e-6)


# ---------------------------------------------------------------------------------------- the KD term


def test_the_cached_top_k_gives_the_live_loss_without_running_the_teacher(dirs, tmp_path):
    model = student(dirs)
    cached = ready(dirs, tmp_path / "cached", model=model, top_k=5, loss="reverse_kl")
    live = ready(dirs, tmp_path / "live", model=model, top_k=5, loss="reverse_kl", cache_teacher=False)
    data = rows(weighted=True)
    task = TaskData(tmp_path / "cached", tiny_tokenizer(), [])
    dataset = cached.train_dataset(datasets.Dataset.from_list(data), task)
    assert live.train_dataset(datasets.Dataset.from_list(data), task).column_names \
        == ["input_ids", "position_ids", "labels", "weights"]
    targets = [sum(label != IGNORE_INDEX for label in row["labels"][1:]) for row in data]
    assert [len(ids) for ids in dataset[TOP_IDS]] == targets and all(len(k) == 5 for k in dataset[TOP_IDS][0])
    assert list((tmp_path / "cached" / "distill").glob("teacher_top_5.rank0.arrow"))
    cached.teacher = None  # the cached loss must not need it
    batch = cached.collator(PackedCollator(0))([dataset[i] for i in range(len(dataset))])
    assert batch[TOP_IDS].shape == (6, max(targets), 5)
    with torch.no_grad():
        outputs = forward(model, batch)
        from_cache = cached.loss_terms(model, batch, outputs)["distill"]
        from_teacher = live.loss_terms(model, PackedCollator(0)(data), outputs)["distill"]
    assert float(from_cache) > 1e-3
    assert abs(float(from_cache) - float(from_teacher)) < 1e-6
    assert cached.summary()["cached_teacher"] == {"rows": 6, "k": 5, "tokens": sum(targets)}


def test_per_token_weights_weigh_the_kd_term_and_a_batch_without_targets_gives_zero(dirs, tmp_path):
    model = student(dirs)
    strategy = ready(dirs, tmp_path, model=model, alpha=1.0, temperature=1.0)
    weighted = PackedCollator(0)(rows(weighted=True))
    mask = weighted["labels"][:, 1:] != IGNORE_INDEX
    with torch.no_grad():
        outputs = forward(model, weighted)
        teacher = strategy.teacher(input_ids=weighted["input_ids"], position_ids=weighted["position_ids"]).logits
        term = strategy.loss_terms(model, weighted, outputs)["distill"]
        plain = strategy.loss_terms(model, {k: v for k, v in weighted.items() if k != "weights"}, outputs)["distill"]
    per_token = token_divergence(outputs.logits[:, :-1][mask], teacher[:, :-1][mask], "forward_kl")
    assert float(term) == pytest.approx(float(weighted_mean(per_token, weighted["weights"][:, 1:][mask])), rel=1e-6)
    assert abs(float(term) - float(plain)) > 1e-4
    empty = {**weighted, "labels": torch.full_like(weighted["labels"], IGNORE_INDEX)}
    term = strategy.loss_terms(model, empty, forward(model, empty))["distill"]
    assert float(term.detach()) == 0.0 and term.requires_grad


def test_a_student_without_logits_is_refused_with_the_fix():
    strategy = distiller("unused")
    batch = PackedCollator(0)(rows(2))
    with pytest.raises(StrategyError, match="use_liger_kernel: false"):
        strategy.loss_terms(None, batch, type("Output", (), {"logits": None})())


def one_sgd_step(dirs, tmp_path, data, batch: int, accumulation: int) -> dict[str, torch.Tensor]:
    settings = TrainerSettings(learning_rate=0.5, max_steps=1, per_device_train_batch_size=batch,
                               gradient_accumulation_steps=accumulation, lr_scheduler_type="constant", warmup_steps=0,
                               max_grad_norm=0, progress=False, trainer_args={"optim": "sgd"})
    args = training_arguments(settings, tmp_path / f"{batch}x{accumulation}", save_strategy="no", use_cache=False,
                              use_cpu=True)
    model = student(dirs)
    strategy = ready(dirs, tmp_path, model=model, alpha=0.7, temperature=2.0)
    trainer = StrategyTrainer(model=model, args=args, train_dataset=datasets.Dataset.from_list(data),
                              data_collator=PackedCollator(0), strategies=[strategy], causal=True)
    trainer.train()
    return {name: p.detach().clone() for name, p in trainer.model.named_parameters()}


@pytest.mark.parametrize("weighted", [False, True])
def test_accumulated_micro_batches_distil_like_one_batch(dirs, tmp_path, weighted):
    """The KD term is on the task loss's per-step scale: 2 x 2 accumulated equals one batch of 4 (rows of equal
    length and weight, so the mean of the micro-batches' means is the batch's mean), on the plain and on the
    weighted loss path; without the trainer's share of the term, the accumulated KD gradient would count twice."""
    data = rows(4, weighted=weighted, even=True)
    start = {name: p.detach().clone() for name, p in student(dirs).named_parameters()}
    whole = one_sgd_step(dirs, tmp_path, data, batch=4, accumulation=1)
    accumulated = one_sgd_step(dirs, tmp_path, data, batch=2, accumulation=2)
    assert max((whole[n] - start[n]).abs().max().item() for n in start) > 1e-3
    assert max((whole[n] - accumulated[n]).abs().max().item() for n in start) < 1e-6


# -------------------------------------------------------------------------------------------- on-policy


def test_on_policy_batches_come_at_the_seeded_fraction(dirs, tmp_path):
    model = student(dirs)
    batch = PackedCollator(0)(rows(2))
    drawn = []
    for _ in range(2):
        strategy = ready(dirs, tmp_path, model=model, on_policy_fraction=0.3, max_new_tokens=2)
        drawn.append([(strategy.transform_inputs(model, batch), strategy.on_policy_now)[1] for _ in range(120)])
        assert strategy.summary()["on_policy_batches"] == sum(drawn[-1])
        assert strategy.summary()["training_batches"] == 120
    assert drawn[0] == drawn[1]  # seeded
    assert 0.3 - 0.08 < sum(drawn[0]) / 120 < 0.3 + 0.08
    never = ready(dirs, tmp_path, model=model)
    assert all(never.transform_inputs(model, batch) is batch for _ in range(20))


def test_a_resumed_run_continues_the_same_draws(dirs, tmp_path):
    model = student(dirs)
    batch = PackedCollator(0)(rows(2))
    first = ready(dirs, tmp_path, model=model, on_policy_fraction=0.4, max_new_tokens=1)
    draws = [(first.transform_inputs(model, batch), first.on_policy_now)[1] for _ in range(10)]
    resumed = ready(dirs, tmp_path, model=model, on_policy_fraction=0.4, max_new_tokens=1)
    [callback] = resumed.callbacks()
    callback.on_train_begin(SimpleNamespace(gradient_accumulation_steps=2), SimpleNamespace(global_step=3), None)
    assert resumed.summary()["on_policy_batches"] == sum(draws[:6])
    assert [(resumed.transform_inputs(model, batch), resumed.on_policy_now)[1] for _ in range(4)] == draws[6:]
    assert resumed.summary()["on_policy_batches"] == sum(draws) and 0 < sum(draws) < 10
    assert ready(dirs, tmp_path, model=model).callbacks() == []


def test_an_on_policy_batch_is_well_formed_and_teaches_by_the_teacher_only(dirs, tmp_path):
    model = student(dirs)
    data = rows(3, weighted=True)
    strategy = ready(dirs, tmp_path, model=model, on_policy_fraction=1.0, max_new_tokens=6, alpha=0.4)
    original = PackedCollator(0)(data)
    original[TOP_IDS] = torch.zeros(3, 1, 1, dtype=torch.long)  # a cached column is dropped: the teacher runs live
    torch.manual_seed(11)
    expected_random = torch.rand(3)
    torch.manual_seed(11)
    generated = strategy.transform_inputs(model, original)
    assert torch.equal(torch.rand(3), expected_random)  # sampling did not move the global random state
    assert TOP_IDS not in generated and strategy.task_loss_weight() == 0.0
    eos = tiny_tokenizer().eos_token_id
    for index, row in enumerate(data):
        prompt = row["labels"].index(next(label for label in row["labels"] if label != IGNORE_INDEX))
        ids, labels = generated["input_ids"][index].tolist(), generated["labels"][index].tolist()
        completion = [label for label in labels[prompt:] if label != IGNORE_INDEX]
        length = prompt + len(completion)
        assert ids[:prompt] == row["input_ids"][:prompt] and labels[:prompt] == [IGNORE_INDEX] * prompt
        assert 1 <= len(completion) <= 6 and completion == ids[prompt:length]
        assert eos not in completion[:-1]  # a completion ends at its first EOS
        assert generated["position_ids"][index, :length].tolist() == list(range(length))
        assert labels[length:] == [IGNORE_INDEX] * (len(labels) - length)
        weights = generated["weights"][index].tolist()
        mean_weight = sum(row["weights"]) / sum(w > 0 for w in row["weights"])
        assert weights[:prompt] == [0.0] * prompt
        assert weights[prompt:length] == pytest.approx([mean_weight] * len(completion))
    term = strategy.loss_terms(model, generated, forward(model, generated))["distill"]
    assert float(term.detach()) > 0 and strategy.task_loss_weight() == pytest.approx(0.6)  # back to 1 - alpha
    again = ready(dirs, tmp_path, model=model, on_policy_fraction=1.0, max_new_tokens=6, alpha=0.4)
    assert torch.equal(again.transform_inputs(model, PackedCollator(0)(data))["input_ids"], generated["input_ids"])


def test_summary_names_what_was_done(dirs, tmp_path):
    summary = ready(dirs, tmp_path, loss="jsd", beta=0.3, top_k=4).summary()
    assert summary["teacher"] == str(dirs["teacher"]) and summary["loss"] == "jsd" and summary["beta"] == 0.3
    assert (summary["temperature"], summary["top_k"], summary["trimmed_rows"]) == (2.0, 4, 0)
    assert "beta" not in ready(dirs, tmp_path).summary()


def test_a_teacher_saved_without_a_tokenizer_is_refused(dirs, tmp_path):
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(tmp_path / "bare")
    refused = "cannot load the tokenizer of the teacher .*; a teacher must come with its tokenizer"
    with pytest.raises(StrategyError, match=refused) as caught:
        distiller(tmp_path / "bare").before_training(student(dirs), TaskData(tmp_path, tiny_tokenizer(), []))
    assert "\n" not in str(caught.value)
