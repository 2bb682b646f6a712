"""strategy.domain (TAPT/DAPT): whole-word masking, the masked-LM stage (loss goes down, encoder copied into the
task model, head untouched), resumable stages (an interrupted stage resumes to the same weights, a finished one is
skipped), texts from files or the task, bad inputs, and ``ner train`` / ``cls train`` end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from adaptlab import example_configs
from adaptlab.data.records import Record, Span, write_records
from adaptlab.errors import DataError, StrategyError
from adaptlab.tuning.families import CAUSAL_LM, ENCODER_TOKEN
from adaptlab.tuning.masking import NOT_A_WORD, WholeWordMaskCollator, choose_positions, corrupt, masking_rows
from adaptlab.tuning.strategies import StrategyBlock, TaskData, prepare
from adaptlab.tuning.strategies.domain import Domain, DomainConfig, clean_texts

WORDS = ["the", "a", "in", "of", "binds", "cells", "near", "lake", "often", "lives", "quiet", "small", "and", "green",
         "protein", "sport", "food", "today", "goal", "soup"]
PIECES = ["zorb", "##fish", "##toad", "##owl", "kin", "##ase", "recept", "##or", "side", "##shore", "##side"]
FAST = ["training.progress=false", "training.per_device_eval_batch_size=64"]
STAGE = ["strategy.domain.max_steps=12", "strategy.domain.save_steps=4", "strategy.domain.learning_rate=3e-3",
         "strategy.domain.per_device_train_batch_size=8"]


@pytest.fixture(scope="module")
def small_bert(tmp_path_factory) -> Path:
    """A tiny random BERT with a 36-word WordPiece vocabulary (fast masked-LM steps), saved with its tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("small-bert")
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *PIECES]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    BertModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def domain_sentences(n: int, seed: int) -> list[str]:
    """Regular text a tiny masked LM learns quickly: 'the kinase binds the receptor in cells' and the like."""
    rng = random.Random(seed)
    return [f"the {rng.choice(['kinase', 'receptor'])} binds the {rng.choice(['protein', 'receptor'])} in "
            f"{rng.choice(['cells', 'small cells', 'green cells'])}" for _ in range(n)]


def ner_records(n: int, seed: int) -> list[Record]:
    """Sentences of filler words with 'zorb...' ANIMAL and 'lake...' PLACE entities (all in the small vocabulary)."""
    rng = random.Random(seed)
    labels = {"zorbfish": "ANIMAL", "zorbtoad": "ANIMAL", "lake": "PLACE", "lakeside": "PLACE"}
    records = []
    for _ in range(n):
        words = [rng.choice([*labels, "the", "a", "often", "lives", "near", "quiet"]) for _ in range(rng.randint(4, 8))]
        starts = [sum(len(w) + 1 for w in words[:i]) for i in range(len(words))]
        records.append(Record(" ".join(words), [Span(s, s + len(w), labels[w]) for s, w in zip(starts, words)
                                                if w in labels]))
    return records


def task_model(path: Path, seed: int = 0):
    from transformers import AutoModelForTokenClassification

    torch.manual_seed(seed)
    return AutoModelForTokenClassification.from_pretrained(path, num_labels=3)


def run_stage(path: Path, output: Path, task_texts: list[str], **settings):
    """``before_training`` of strategy.domain on a fresh task model; returns (model, strategy)."""
    from transformers import AutoTokenizer

    block = StrategyBlock.model_validate({"domain": {"max_steps": 12, "save_steps": 4, "learning_rate": 3e-3,
                                                     "per_device_train_batch_size": 8, **settings}})
    output.mkdir(parents=True, exist_ok=True)
    task = TaskData(output, AutoTokenizer.from_pretrained(path), task_texts, ["O", "B-X", "I-X"], None, 32, 3)
    model, strategies = prepare(block, ENCODER_TOKEN, task_model(path), task)
    return model, strategies[0]


# ------------------------------------------------------------------------------------------- whole-word masking

def test_whole_word_masking_masks_every_subword_of_a_word_together(tokenizer):
    texts = ["Staphylococcus aureus infections resist methicillin.", "Pseudomonas aeruginosa colonises lungs",
             "the cat sat"] * 20
    rows = masking_rows(texts, tokenizer, 64, whole_word=True)
    assert tokenizer.convert_ids_to_tokens(rows["input_ids"][0])[1:4] == ["st", "##ap", "##hyl"]
    word_ids = torch.full((len(texts), max(map(len, rows["word_ids"]))), NOT_A_WORD)
    for i, words in enumerate(rows["word_ids"]):
        word_ids[i, :len(words)] = torch.tensor(words)
    assert word_ids[0, -2] != word_ids[0, -3]  # "methicillin" and "." are two words
    generator = torch.Generator().manual_seed(0)
    chosen_words = total_words = 0
    for _ in range(50):
        chosen = choose_positions(word_ids, 0.3, generator)
        assert not chosen[word_ids == NOT_A_WORD].any()  # never [CLS], [SEP] or padding
        for row in range(len(texts)):
            for word in word_ids[row].unique():
                if word == NOT_A_WORD:
                    continue
                flags = chosen[row][word_ids[row] == word]
                assert flags.all() or not flags.any()  # a word is masked whole or not at all
                chosen_words += int(flags[0])
                total_words += 1
    assert chosen_words / total_words == pytest.approx(0.3, abs=0.02)

    per_subword = masking_rows(texts, tokenizer, 64, whole_word=False)["word_ids"]
    ids = torch.tensor([words + [NOT_A_WORD] * (word_ids.size(1) - len(words)) for words in per_subword])
    split = torch.stack([choose_positions(ids, 0.5, generator)[0, 1:6] for _ in range(20)])
    assert not (split.all(dim=1) | ~split.any(dim=1)).all()  # subword masking splits "staphylococcus"


def test_chosen_subwords_follow_the_80_10_10_rule_and_labels_are_the_originals(tokenizer):
    input_ids = torch.randint(1000, 2000, (64, 50))
    chosen = torch.rand(64, 50) < 0.5
    corrupted, labels = corrupt(input_ids, chosen, tokenizer.mask_token_id, len(tokenizer),
                                torch.Generator().manual_seed(1))
    assert torch.equal(labels[chosen], input_ids[chosen]) and (labels[~chosen] == -100).all()
    assert torch.equal(corrupted[~chosen], input_ids[~chosen])
    masked = (corrupted[chosen] == tokenizer.mask_token_id).float().mean()
    kept = (corrupted[chosen] == input_ids[chosen]).float().mean()
    assert masked == pytest.approx(0.8, abs=0.03) and kept == pytest.approx(0.1, abs=0.02)


def test_a_batch_always_has_a_masked_word_and_padding_is_aligned(tokenizer):
    rows = masking_rows(["short text", "a much longer text with several more words in it"], tokenizer, 32, True)
    collate = WholeWordMaskCollator(tokenizer, 1e-6, torch.Generator().manual_seed(0))
    batch = collate([{key: values[i] for key, values in rows.items()} for i in range(2)])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert int((batch["labels"] != -100).sum()) >= 1  # p ~ 0 still masks one word
    assert ((batch["labels"] != -100) <= batch["attention_mask"].bool()).all()


# ---------------------------------------------------------------------------------------------- the MLM stage

def test_the_stage_lowers_the_mlm_loss_and_the_task_model_gets_the_adapted_encoder(small_bert, tmp_path):
    from transformers import AutoModelForMaskedLM

    texts = domain_sentences(40, 0)
    before = task_model(small_bert)
    model, strategy = run_stage(small_bert, tmp_path / "run", texts + ["", "   ", texts[0]], max_steps=40)
    done = strategy.summary()
    assert done["texts_from"] == "task"  # default: the task's own training texts
    assert done["texts"] == len(set(texts)) and done["empty_dropped"] == 2
    assert done["duplicates_dropped"] == len(texts) + 1 - len(set(texts))
    assert done["steps"] == 40 and done["mlm_head"] == "new"
    assert done["mlm_loss_after"] < done["mlm_loss_before"] - 0.5  # e.g. 3.8 -> 2.2 on these regular texts
    assert done["mlm_loss_last"] < done["mlm_loss_first"]
    adapted = AutoModelForMaskedLM.from_pretrained(tmp_path / "run" / "domain" / "model")
    mlm_weights = dict(adapted.bert.named_parameters())
    for name, weight in model.bert.named_parameters():
        if name.startswith("pooler"):
            continue
        assert torch.equal(weight, mlm_weights[name]), name
    assert not torch.equal(model.bert.encoder.layer[0].output.dense.weight,
                           before.bert.encoder.layer[0].output.dense.weight)
    assert torch.equal(model.classifier.weight, before.classifier.weight)  # the head stays freshly initialised
    stage = tmp_path / "run" / "domain"
    assert {"stage.json", "done.json", "model"} <= {p.name for p in stage.iterdir()}
    assert not (stage / "checkpoints").exists()


def interrupt_after(step: int, monkeypatch, error: type[BaseException] = RuntimeError) -> None:
    """The stage fails right after its checkpoint at ``step`` is marked complete."""
    from adaptlab.lm.checkpoints import CheckpointMarker

    original = CheckpointMarker.on_save

    def on_save(self, args, state, control, **kwargs):
        original(self, args, state, control, **kwargs)
        if state.global_step == step:
            raise error(f"interrupted after step {step}")
        return control

    monkeypatch.setattr(CheckpointMarker, "on_save", on_save)


def test_an_interrupted_stage_resumes_to_the_weights_of_an_uninterrupted_one(small_bert, tmp_path, monkeypatch):
    texts = domain_sentences(30, 1)
    whole, _ = run_stage(small_bert, tmp_path / "whole", texts)
    with monkeypatch.context() as patch:
        interrupt_after(8, patch)
        with pytest.raises(RuntimeError, match="after step 8"):
            run_stage(small_bert, tmp_path / "cut", texts)
    assert (tmp_path / "cut" / "domain" / "checkpoints" / "checkpoint-8").is_dir()
    assert not (tmp_path / "cut" / "domain" / "done.json").exists()
    resumed, strategy = run_stage(small_bert, tmp_path / "cut", texts)
    assert strategy.summary()["resumed_from"].endswith("checkpoint-8") and strategy.summary()["steps"] == 12
    for (name, a), b in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name

    again, strategy = run_stage(small_bert, tmp_path / "cut", texts)  # finished: skipped, the same encoder
    assert strategy.summary()["reused"] is True
    assert torch.equal(again.bert.encoder.layer[1].output.dense.weight,
                       whole.bert.encoder.layer[1].output.dense.weight)
    with pytest.raises(StrategyError, match="made from other settings"):
        run_stage(small_bert, tmp_path / "cut", texts, mlm_probability=0.3)


def test_dapt_reads_text_and_record_files_and_cleans_them(small_bert, tmp_path):
    lines = tmp_path / "domain.txt"
    lines.write_text("the kinase binds the protein\n\n  the kinase binds the protein  \nzorbfish lives near lake\n")
    records = tmp_path / "domain.jsonl"
    records.write_text(json.dumps({"text": "the receptor binds in cells", "spans": []}) + "\n")
    _, strategy = run_stage(small_bert, tmp_path / "run", ["unused task text"], max_steps=2,
                            texts=[str(lines), str(records)])
    done = strategy.summary()
    assert done["texts_from"] == f"{lines}, {records}"
    assert (done["texts_read"], done["duplicates_dropped"], done["texts"]) == (4, 1, 3)


def test_cleaning_strips_drops_empty_and_duplicate_texts():
    cleaned = clean_texts([" a b ", "", "a b", "c", "  \t", "c "], "task")
    assert cleaned.texts == ["a b", "c"] and (cleaned.read, cleaned.empty, cleaned.duplicates) == (6, 2, 2)


# ---------------------------------------------------------------------------------------------------- bad input

def test_texts_empty_after_cleaning_are_refused(small_bert, tmp_path):
    with pytest.raises(StrategyError, match="no text is left after cleaning the task's training texts"):
        run_stage(small_bert, tmp_path / "run", ["  ", "\t"])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n\n")
    with pytest.raises(DataError, match="blank.txt: file is empty"):
        run_stage(small_bert, tmp_path / "run2", ["x"], texts=[str(blank)])


def test_causal_lms_and_encoders_without_a_masked_lm_form_are_refused(tiny_llama):
    config = DomainConfig()
    with pytest.raises(StrategyError, match="lm train"):
        Domain(config, CAUSAL_LM).check(tiny_llama(), {})
    with pytest.raises(StrategyError, match="no masked-LM form"):
        Domain(config, ENCODER_TOKEN).check(tiny_llama(), {})


def test_a_tokenizer_without_a_mask_token_is_refused(small_bert, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(small_bert)
    tokenizer.mask_token = None
    task = TaskData(tmp_path, tokenizer, ["a text"], ["O"], None, 32, 0)
    with pytest.raises(StrategyError, match="no mask token"):
        Domain(DomainConfig(), ENCODER_TOKEN).before_training(task_model(small_bert), task)


# ------------------------------------------------------------------------------------------------- end to end

def test_cls_train_with_dapt_files(small_bert, tmp_path, run_cli):
    rows = [{"text": f"{word} today", "label": label} for word, label in [("goal", "sport"), ("soup", "food")] * 8]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (tmp_path / "domain.txt").write_text("the goal today\nsoup and food today\n")
    code, _, err = run_cli("cls", "train", "--train", tmp_path / "train.jsonl", "--model", small_bert, "--output",
                           tmp_path / "run", "--epochs", "1", "dev_fraction=0", *STAGE,
                           f"strategy.domain.texts=[{tmp_path / 'domain.txt'}]", *FAST)
    assert code == 0, err
    done = json.loads((tmp_path / "run" / "metrics.json").read_text())["strategies"]["domain"]
    assert done["texts_from"] == str(tmp_path / "domain.txt") and done["texts"] == 2


def test_ner_train_with_tapt_continues_an_interrupted_stage_when_run_again(small_bert, tmp_path, run_cli, monkeypatch):
    write_records(ner_records(24, 0), tmp_path / "train.jsonl")
    command = ["ner", "train", "--train", tmp_path / "train.jsonl", "--model", small_bert, "--output",
               tmp_path / "run", "--epochs", "1", *STAGE, *FAST]
    with monkeypatch.context() as patch:
        interrupt_after(4, patch, KeyboardInterrupt)
        code, _, err = run_cli(*command)
    assert code == 130 and "kept" in err
    assert (tmp_path / "run" / "domain" / "checkpoints" / "checkpoint-4").is_dir()
    code, _, err = run_cli(*command[:-len(FAST)], "training.seed=7", *FAST)  # another config: refused
    assert code == 2 and "training.seed" in err
    code, _, err = run_cli(*command)
    assert code == 0, err
    done = json.loads((tmp_path / "run" / "metrics.json").read_text())["strategies"]["domain"]
    assert done["resumed_from"].endswith("checkpoint-4") and done["steps"] == 12 and done["texts_from"] == "task"
    assert done["texts"] > 10 and done["seconds"] > 0 and done["mlm_loss_after"] < done["mlm_loss_before"]
    assert (tmp_path / "run" / "domain" / "done.json").is_file() and (tmp_path / "run" / "model").is_dir()
    code, _, err = run_cli(*command)  # finished: never overwritten
    assert code == 2 and "already exists" in err


def test_unlabeled_text_empty_after_cleaning_exits_2_through_the_cli(small_bert, tmp_path, run_cli):
    write_records(ner_records(8, 0), tmp_path / "train.jsonl")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"text": "   "}) + "\n")
    code, _, err = run_cli("ner", "train", "--train", tmp_path / "train.jsonl", "--model", small_bert, "--output",
                           tmp_path / "run", *STAGE, f"strategy.domain.texts=[{tmp_path / 'blank.jsonl'}]", *FAST)
    assert code == 2 and "blank.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_example_config_validates():
    from adaptlab.config import load_config
    from adaptlab.recipes.ner import NERTrainConfig

    cfg = load_config(NERTrainConfig, example_configs.path("ner_tapt"), [], {})
    assert cfg.strategy.domain.max_steps == 500 and cfg.strategy.domain.texts
