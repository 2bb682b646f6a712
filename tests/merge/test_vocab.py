"""Vocabulary alignment: tokenizers that differ by added tokens, id order and embedding padding.

The tokenizers are copies of the packaged MiniLM (BERT WordPiece, 30522 tokens) tokenizer; the
embeddings are small fake tensors whose values name their input and row, so every gathered row can
be traced back to where it came from.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import AddedToken
from transformers import AutoTokenizer

from adaptlab.errors import ModelError
from adaptlab.merge.methods import METHODS
from adaptlab.merge.vocab import (
    describe_vocab_difference,
    plan_vocab,
    special_tokens,
    tokenizer_vocab,
    write_output_tokenizer,
)

WORDPIECE = 30522
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory, tokenizer_dir) -> dict[str, str]:
    """Tokenizer directories: base and domain (identical), instruct (+ chat tokens), other, swapped, none."""
    root = tmp_path_factory.mktemp("vocab")

    def saved(name: str, *added: AddedToken) -> str:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        if added:
            tokenizer.add_tokens(list(added))
        tokenizer.save_pretrained(root / name)
        return str(root / name)

    special = [AddedToken(token, special=True, normalized=False) for token in CHAT_TOKENS]
    dirs = {
        "base": saved("base"),
        "domain": saved("domain"),
        "instruct": saved("instruct", *special),  # <|im_start|> 30522, <|im_end|> 30523
        "other": saved("other", special[1], special[0], AddedToken("domainword")),  # the other order + a word
        "swapped": saved("swapped"),
    }
    tokenizer_json = Path(dirs["swapped"]) / "tokenizer.json"
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = data["model"]["vocab"]
    vocab["hello"], vocab["world"] = vocab["world"], vocab["hello"]
    tokenizer_json.write_text(json.dumps(data), encoding="utf-8")
    (root / "none").mkdir()
    (root / "none" / "config.json").write_text('{"model_type": "bert"}', encoding="utf-8")
    dirs["none"] = str(root / "none")
    return dirs


def tagged(rows: int, input_number: int, width: int = 4) -> torch.Tensor:
    """Row r of input k holds 100000·k + r in every column."""
    return (torch.arange(rows, dtype=torch.float32) + 100000 * input_number)[:, None].repeat(1, width)


def test_identical_tokenizers_are_no_difference(tok):
    assert describe_vocab_difference([tok["base"], tok["domain"]]) is None
    assert describe_vocab_difference([tok["base"]]) is None


def test_added_tokens_are_described_from_the_reference(tok):
    base, instruct = tok["base"], tok["instruct"]
    assert describe_vocab_difference([base, instruct]) == \
        f"{instruct} has 2 tokens {base} lacks (<|im_start|>, <|im_end|>)"
    assert describe_vocab_difference([base, instruct], reference=1) == \
        f"{instruct} has 2 tokens {base} lacks (<|im_start|>, <|im_end|>)"
    three = describe_vocab_difference([base, tok["domain"], tok["other"]])
    assert three == f"{tok['other']} has 3 tokens {base} lacks (<|im_end|>, <|im_start|>, domainword)"


def test_reordered_ids_are_described(tok):
    vocab = tokenizer_vocab(tok["base"])
    first = min(("hello", "world"), key=vocab.__getitem__)
    second = "world" if first == "hello" else "hello"
    assert describe_vocab_difference([tok["base"], tok["swapped"]]) == (
        f"2 tokens map to different ids in {tok['base']} and {tok['swapped']} "
        f"(e.g. '{first}': {vocab[first]} vs {vocab[second]})")


def test_vocab_and_special_tokens_include_added_tokens(tok):
    vocab = tokenizer_vocab(tok["instruct"])
    assert len(vocab) == WORDPIECE + 2 and vocab["<|im_start|>"] == WORDPIECE and vocab["<|im_end|>"] == WORDPIECE + 1
    assert {"[CLS]", "[SEP]", "[PAD]", *CHAT_TOKENS} <= special_tokens(tok["instruct"])
    assert not set(CHAT_TOKENS) & special_tokens(tok["base"])
    assert "domainword" in tokenizer_vocab(tok["other"]) and "domainword" not in special_tokens(tok["other"])


def test_missing_tokenizer_is_a_model_error(tok, tmp_path):
    with pytest.raises(ModelError, match="no tokenizer files"):
        tokenizer_vocab(tok["none"])
    with pytest.raises(ModelError, match="not a model directory"):
        describe_vocab_difference([tok["base"], str(tmp_path / "absent")])
    with pytest.raises(ModelError, match="no tokenizer files"):
        plan_vocab([tok["base"], tok["none"]], "union", 0, [1], [WORDPIECE, WORDPIECE])


def test_identical_tokenizers_align_as_the_identity(tok):
    alignment = plan_vocab([tok["base"], tok["domain"]], "union", 0, [1], [30528, 30528])
    assert alignment.out_rows == 30528 and alignment.new_tokens == [] and alignment.padding_rows == 6
    for source in alignment.sources:
        assert torch.equal(source, torch.arange(30528))
    embeddings = [torch.randn(30528, 4), torch.randn(30528, 4)]
    assert all(torch.equal(a, e) for a, e in zip(alignment.align(embeddings), embeddings))
    assert alignment.report()["rows_filled"] == {tok["base"]: 0, tok["domain"]: 0}


def test_base_mode_drops_instruct_only_tokens(tok, caplog):
    base, instruct = tok["base"], tok["instruct"]
    with caplog.at_level(logging.WARNING, logger="adaptlab"):
        alignment = plan_vocab([base, instruct], "base", 0, [1, 0], [WORDPIECE, WORDPIECE + 2])
    assert alignment.out_rows == WORDPIECE and alignment.new_tokens == []
    assert torch.equal(alignment.sources[1], torch.arange(WORDPIECE))
    aligned = alignment.align([tagged(WORDPIECE, 0), tagged(WORDPIECE + 2, 1)])
    assert aligned[1].shape == (WORDPIECE, 4) and torch.equal(aligned[1], tagged(WORDPIECE + 2, 1)[:WORDPIECE])
    report = alignment.report()
    assert report["dropped_tokens"] == {base: 0, instruct: 2}
    assert report["dropped_special_tokens"] == {instruct: CHAT_TOKENS}
    assert report["output_tokens"] == WORDPIECE and report["new_tokens"] == 0
    assert "2 special token(s) are not in the output vocabulary (<|im_start|>, <|im_end|>)" in caplog.text


def test_union_takes_new_rows_from_the_instruct_model_for_every_input(tok):
    """Chat vector layout: domain + (instruct − base), tokenizer from the domain model."""
    paths = [tok["base"], tok["domain"], tok["instruct"]]
    alignment = plan_vocab(paths, "union", reference=1, priority=[2], embedding_rows=[WORDPIECE, WORDPIECE,
                                                                                        WORDPIECE + 2])
    assert alignment.new_tokens == [("<|im_start|>", True), ("<|im_end|>", True)]
    assert alignment.out_rows == WORDPIECE + 2 and alignment.priority == [2, 0, 1]
    assert alignment.sources[0][WORDPIECE:].tolist() == [-1, -1]
    assert alignment.sources[2][WORDPIECE:].tolist() == [WORDPIECE, WORDPIECE + 1]
    generator = torch.Generator().manual_seed(0)
    base, domain, instruct = (torch.randn(rows, 8, generator=generator) for rows in alignment.embedding_rows)
    aligned_base, aligned_domain, aligned_instruct = alignment.align([base, domain, instruct])
    for aligned in (aligned_base, aligned_domain, aligned_instruct):
        assert torch.equal(aligned[WORDPIECE:], instruct[WORDPIECE:])
    method = METHODS["task_arithmetic"]
    merged = method.fn(aligned_base, [aligned_domain, aligned_instruct], [1.0, 0.7], [1.0, 1.0],
                       dict(method.defaults), None)
    assert torch.equal(merged[WORDPIECE:], instruct[WORDPIECE:])  # exactly the instruct model's rows
    expected = base + (domain - base) + 0.7 * (instruct[:WORDPIECE] - base)
    torch.testing.assert_close(merged[:WORDPIECE], expected, rtol=0, atol=1e-6)
    report = alignment.report()
    assert report["rows_filled"] == {tok["base"]: 2, tok["domain"]: 2, tok["instruct"]: 0}
    assert report["rows_missing"] == 0 and report["new_token_list"] == CHAT_TOKENS


def test_padding_rows_are_kept_from_the_reference(tok):
    base, instruct = tok["base"], tok["instruct"]
    alignment = plan_vocab([base, instruct], "union", 0, [1], [30528, WORDPIECE + 2])
    assert alignment.out_rows == 30528 and alignment.padding_rows == 4
    assert alignment.sources[0][WORDPIECE:].tolist() == [-1, -1, 30524, 30525, 30526, 30527]
    assert alignment.sources[1][WORDPIECE:].tolist() == [WORDPIECE, WORDPIECE + 1, -1, -1, -1, -1]
    padded, chat = tagged(30528, 0), tagged(WORDPIECE + 2, 1)
    aligned = alignment.align([padded, chat])
    for rows in aligned:  # new tokens from the instruct model (not the reference's padding), padding from the base
        assert torch.equal(rows[WORDPIECE:WORDPIECE + 2], chat[WORDPIECE:])
        assert torch.equal(rows[WORDPIECE + 2:], padded[WORDPIECE + 2:])
    assert alignment.report()["rows_filled"] == {base: 2, instruct: 4}

    unpadded = plan_vocab([base, tok["domain"]], "base", 0, [1], [30528, WORDPIECE])
    aligned = unpadded.align([padded, tagged(WORDPIECE, 1)])
    assert torch.equal(aligned[1][:WORDPIECE], tagged(WORDPIECE, 1)) and torch.equal(aligned[1][WORDPIECE:],
                                                                                      padded[WORDPIECE:])


def test_tokens_beyond_every_embedding_are_zeros_and_counted(tok, caplog):
    """The instruct tokenizer has the chat tokens, but its embedding was never resized."""
    with caplog.at_level(logging.WARNING, logger="adaptlab"):
        alignment = plan_vocab([tok["base"], tok["instruct"]], "union", 0, [1], [WORDPIECE, WORDPIECE])
    assert alignment.out_rows == WORDPIECE + 2 and alignment.sources[1][WORDPIECE:].tolist() == [-1, -1]
    aligned = alignment.align([tagged(WORDPIECE, 1), tagged(WORDPIECE, 2)])
    assert all(torch.equal(rows[WORDPIECE:], torch.zeros(2, 4)) for rows in aligned)
    assert alignment.report()["rows_missing"] == 2
    assert "2 embedding row(s) exist in no input" in caplog.text


def test_priority_decides_new_token_order_and_donor(tok):
    base, instruct, other = tok["base"], tok["instruct"], tok["other"]
    rows = [WORDPIECE, WORDPIECE + 2, WORDPIECE + 3]
    embeddings = [tagged(count, number) for number, count in enumerate(rows)]

    other_first = plan_vocab([base, instruct, other], "union", 0, [2, 1, 0], rows)
    assert other_first.new_tokens == [("<|im_end|>", True), ("<|im_start|>", True), ("domainword", False)]
    aligned = other_first.align(embeddings)
    im_end = WORDPIECE  # output id of <|im_end|>; other has it at 30522, instruct at 30523
    assert aligned[0][im_end, 0] == 200000 + WORDPIECE  # the base lacks it: other's row
    assert aligned[1][im_end, 0] == 100000 + WORDPIECE + 1  # instruct has it: its own row
    assert aligned[2][im_end, 0] == 200000 + WORDPIECE

    instruct_first = plan_vocab([base, instruct, other], "union", 0, [1, 2, 0], rows)
    assert instruct_first.new_tokens == [("<|im_start|>", True), ("<|im_end|>", True), ("domainword", False)]
    aligned = instruct_first.align(embeddings)
    im_end = WORDPIECE + 1
    assert aligned[0][im_end, 0] == 100000 + WORDPIECE + 1  # now from the instruct model
    assert aligned[2][im_end, 0] == 200000 + WORDPIECE  # other keeps its own
    assert torch.equal(aligned[1][WORDPIECE + 2], embeddings[2][WORDPIECE + 2])  # domainword from other


def test_union_tokenizer_is_saved_with_the_new_ids(tok, tmp_path):
    base = tok["base"]
    out = tmp_path / "merged"
    shutil.copytree(base, out)  # the engine has copied the reference's tokenizer files already
    alignment = plan_vocab([base, tok["other"]], "union", 0, [1], [WORDPIECE, WORDPIECE + 3])
    assert write_output_tokenizer(base, alignment, out) == WORDPIECE + 3
    merged = AutoTokenizer.from_pretrained(out)
    hello = tokenizer_vocab(base)["hello"]
    ids = merged.encode("<|im_start|>hello<|im_end|> domainword", add_special_tokens=False)
    assert ids == [WORDPIECE + 1, hello, WORDPIECE, WORDPIECE + 2]
    assert merged.decode(ids, skip_special_tokens=True).split() == ["hello", "domainword"]
    assert set(CHAT_TOKENS) <= special_tokens(out) and "domainword" not in special_tokens(out)

    kept = tmp_path / "kept"
    kept.mkdir()
    base_only = plan_vocab([base, tok["other"]], "base", 0, [1], [WORDPIECE, WORDPIECE + 3])
    assert write_output_tokenizer(base, base_only, kept) == WORDPIECE and not any(kept.iterdir())


def test_aligned_rows_follow_token_strings_end_to_end(tok, tmp_path):
    """Every input's embedding row of token t holds t's id in the written output tokenizer."""
    paths = [tok["base"], tok["swapped"], tok["instruct"]]
    rows = [30528, WORDPIECE, WORDPIECE + 2]
    alignment = plan_vocab(paths, "union", 0, [2, 0, 1], rows)
    write_output_tokenizer(tok["base"], alignment, tmp_path)
    out_vocab = tokenizer_vocab(tmp_path)
    assert len(out_vocab) == WORDPIECE + 2 and alignment.out_rows == 30528
    embeddings = []
    for path, count in zip(paths, rows):
        embedding = torch.full((count, 3), -1.0)
        for token, row in tokenizer_vocab(path).items():
            embedding[row] = out_vocab[token]
        embeddings.append(embedding)
    token_rows = torch.tensor(sorted(out_vocab.values()))
    for aligned in alignment.align(embeddings):
        assert torch.equal(aligned[token_rows, 0], token_rows.float())
        assert torch.equal(aligned[WORDPIECE + 2:], torch.full((4, 3), -1.0))  # the base's padding rows


def test_wrong_arguments_are_refused(tok):
    alignment = plan_vocab([tok["base"], tok["instruct"]], "union", 0, [1], [WORDPIECE, WORDPIECE + 2])
    with pytest.raises(ModelError, match=r"embedding of shape \(30522, 4\) where .* expects \(30524, 4\)"):
        alignment.align([tagged(WORDPIECE, 0), tagged(WORDPIECE, 1)])
    with pytest.raises(ValueError, match="2 inputs"):
        alignment.align([tagged(WORDPIECE, 0)])
    with pytest.raises(ValueError, match="'base' or 'union'"):
        plan_vocab([tok["base"], tok["instruct"]], "strict", 0, [1], [WORDPIECE, WORDPIECE + 2])
    with pytest.raises(ValueError, match="distinct input indices"):
        plan_vocab([tok["base"], tok["instruct"]], "union", 0, [1, 1], [WORDPIECE, WORDPIECE + 2])
