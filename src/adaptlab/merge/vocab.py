"""Align embedding rows by token string when the inputs of a merge have different tokenizers.

Why: an embedding matrix (the input embedding, and the output embedding / ``lm_head``) has one row
per token id. When tokenizers differ -- an instruct model that added ``<|im_start|>``, a domain
model with an extended vocabulary, ids in another order -- the same row index means different
tokens in different inputs, and merging row by row mixes them (or fails on the shapes). So each
input's rows are first gathered into the output's token order; the merge method then sees tensors
whose row r is the same token in every input. ``vocab: strict`` (the default) stops instead, with
:func:`describe_vocab_difference` as the explanation.

Output vocabulary (``reference`` is the input whose tokenizer the output keeps, ``tokenizer_from``):

* ``base``: the reference vocabulary, ids unchanged. Tokens only other inputs have are dropped
  (counted per input in :meth:`VocabAlignment.report`, special ones listed).
* ``union``: the reference vocabulary plus every token of the other inputs that it lacks, taken in
  ``priority`` order and, within one input, by id, with ids ``V, V+1, ...`` where
  ``V = max(reference id) + 1`` (the reference tokenizer's length when its ids have no holes).
  Tokens that are ordinary vocabulary pieces in another input become *added* tokens, which match
  their literal text; union is meant for added and special (chat) tokens.

Output rows: ``R = max(rows_ref, max(output id) + 1)``, where ``rows_i`` is input i's number of
embedding rows. It may exceed its tokenizer (checkpoints pad to a multiple of 64) or fall short of
it (an id ``>= rows_i`` does not exist in that model). Row r is a *token row* when an output token
has id r, else a *padding row*.

Sources: ``sources[i][r]`` is the row of input i that output row r is read from, or -1 (lacking):

* token row of token t: ``id_i(t)`` when input i's tokenizer has t and ``id_i(t) < rows_i``;
* padding row r: r itself when ``r < rows_i`` and r is not a token id of input i (padding there
  too). The reference has all its padding rows, and identical tokenizers give the identity.

Filling: :meth:`VocabAlignment.align` gives every input a tensor of R rows. An input that lacks
row r gets the row of its *donor*, the first input in ``priority`` that has it. Every input then
holds the same value x at r, and a method that returns x for equal inputs keeps it: exactly for task
arithmetic θ_b + λ Σ w_i (x − x) = x, TIES, DARE (zero task vectors) and SLERP; to rounding for
normalised linear Σ w_i x / Σ w_i (unnormalised linear scales it by Σ w_i). So a new token's row is
what the model that has it learnt; put the instruct (chat) model first in ``priority`` so its chat
and special tokens come from it. A row no input has (a token whose id lies beyond every embedding)
is zeros in every input, counted as ``rows_missing``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from adaptlab.errors import ModelError
from adaptlab.runs import get_logger

VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
               "sentencepiece.bpe.model", "tiktoken.model")
SHOWN_TOKENS = 5  # tokens quoted in an explanation before "..."
REPORTED_TOKENS = 50  # new or dropped special tokens listed in the report
COPY_BLOCK_BYTES = 8 << 20  # align() gathers rows in blocks of about this size: cache-sized temporaries are fastest


def has_tokenizer(path: str | Path) -> bool:
    """Whether a model directory ships a vocabulary file a tokenizer can be built from."""
    return any((Path(path) / name).is_file() for name in VOCAB_FILES)


def load_tokenizer(path: str | Path):
    """``AutoTokenizer.from_pretrained(path)`` of a local model directory that ships tokenizer files.

    The files are checked first because transformers builds an almost empty tokenizer from a
    directory that has none, which would look like a vocabulary of five tokens.
    """
    directory = Path(path)
    if not directory.is_dir():
        raise ModelError(f"{path}: not a model directory, so its tokenizer cannot be read")
    if not has_tokenizer(directory):
        raise ModelError(f"{path}: no tokenizer files (none of {', '.join(VOCAB_FILES)}); vocabularies can only be "
                         "aligned between models that ship their tokenizer")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: the tokenizer cannot be loaded ({exc})") from None


def tokenizer_vocab(path: str | Path) -> dict[str, int]:
    """Token string -> id of the tokenizer in ``path``, added tokens included."""
    return load_tokenizer(path).get_vocab()


def special_tokens(path: str | Path) -> set[str]:
    """The special tokens of the tokenizer in ``path`` (named ones and added tokens marked special)."""
    return _specials(load_tokenizer(path))


def describe_vocab_difference(paths: list[str], reference: int = 0) -> str | None:
    """None when every tokenizer has the same token -> id map as ``paths[reference]``; else what differs.

    E.g. ``models/instruct has 2 tokens models/base lacks (<|im_start|>, <|im_end|>); 12 tokens map to
    different ids in models/base and models/instruct (e.g. 'hello': 7592 vs 2088)``. Embedding rows
    that differ only by padding are not a vocabulary difference (:func:`plan_vocab` handles them).
    """
    vocabs = [tokenizer_vocab(path) for path in paths]
    parts = [_difference(paths[reference], vocabs[reference], path, vocab)
             for index, (path, vocab) in enumerate(zip(paths, vocabs))
             if index != reference and vocab != vocabs[reference]]
    return "; ".join(parts) or None


@dataclass
class VocabAlignment:
    """How each input's embedding rows map onto the output's rows (see the module docstring).

    ``sources[i][r]``: the row of input i behind output row r, or -1; ``new_tokens``: (token,
    is_special) appended by ``union`` with ids ``first_new_id, first_new_id + 1, ...``.
    """

    mode: str
    out_rows: int
    sources: list[torch.Tensor]
    new_tokens: list[tuple[str, bool]]
    paths: list[str]
    reference: int
    priority: list[int]
    embedding_rows: list[int]
    output_tokens: int
    first_new_id: int
    padding_rows: int
    dropped_tokens: list[int]  # per input: its tokens the output vocabulary lacks
    dropped_special: list[list[str]]  # per input: the special ones among them
    new_token_options: dict[str, dict[str, bool]] = field(default_factory=dict)  # AddedToken flags of the owner
    donor_input: torch.Tensor = field(init=False)  # per output row: first input in priority that has it, or -1
    donor_row: torch.Tensor = field(init=False)  # that input's row, or -1

    def __post_init__(self) -> None:
        self.donor_input = torch.full((self.out_rows,), -1, dtype=torch.long)
        self.donor_row = torch.full((self.out_rows,), -1, dtype=torch.long)
        for index in reversed(self.priority):  # earlier inputs in priority overwrite later ones
            has = self.sources[index] >= 0
            self.donor_input[has] = index
            self.donor_row[has] = self.sources[index][has]

    def align(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per input, a float32 tensor of ``out_rows`` rows: its own row where it has one, else its donor's.

        ``tensors[i]`` is input i's embedding-like tensor of shape ``(embedding_rows[i], ...)``; rows are
        gathered with index tensors, a bounded block at a time.
        """
        if len(tensors) != len(self.sources):
            raise ValueError(f"align() got {len(tensors)} tensors for {len(self.sources)} inputs")
        trailing = tuple(tensors[0].shape[1:])
        for path, rows, tensor in zip(self.paths, self.embedding_rows, tensors):
            if tensor.dim() < 1 or tensor.shape[0] != rows or tuple(tensor.shape[1:]) != trailing:
                raise ModelError(f"{path}: embedding of shape {tuple(tensor.shape)} where the vocabulary alignment "
                                 f"expects {(rows, *trailing)}")
        missing = (self.donor_input < 0).nonzero().squeeze(1)
        aligned = []
        for index, tensor in enumerate(tensors):
            out = torch.empty((self.out_rows, *trailing), dtype=torch.float32)
            own = self.sources[index] >= 0
            if own.any():  # gather every row from this input (row 0 stands in where it lacks one) ...
                _gather_rows(out, tensor, self.sources[index].clamp(min=0))
            for donor in self.priority:  # ... then overwrite the rows it lacks with its donors' rows
                if donor == index:
                    continue
                positions = (~own & (self.donor_input == donor)).nonzero().squeeze(1)
                _copy_rows(out, positions, tensors[donor], self.donor_row[positions])
            out[missing] = 0.0
            aligned.append(out)
        return aligned

    def report(self) -> dict[str, Any]:
        """Counts for ``merge_report.json``: output tokens and rows, new and dropped tokens, rows filled."""
        return {
            "mode": self.mode,
            "tokenizer_from": self.paths[self.reference],
            "output_tokens": self.output_tokens,
            "output_rows": self.out_rows,
            "padding_rows": self.padding_rows,
            "new_tokens": len(self.new_tokens),
            "new_token_list": [token for token, _ in self.new_tokens[:REPORTED_TOKENS]],
            "dropped_tokens": dict(zip(self.paths, self.dropped_tokens)),
            "dropped_special_tokens": {path: tokens[:REPORTED_TOKENS]
                                       for path, tokens in zip(self.paths, self.dropped_special) if tokens},
            "rows_filled": {path: int(((source < 0) & (self.donor_input >= 0)).sum())
                            for path, source in zip(self.paths, self.sources)},
            "rows_missing": int((self.donor_input < 0).sum()),
        }


def plan_vocab(paths: list[str], mode: Literal["base", "union"], reference: int, priority: list[int],
               embedding_rows: list[int]) -> VocabAlignment:
    """Decide the output vocabulary and, per input, which of its rows each output row reads.

    ``priority`` lists input indices, the model whose new and special tokens should win first (the
    instruct model); inputs it leaves out follow in index order. ``embedding_rows[i]`` is input i's
    number of embedding rows.
    """
    if mode not in ("base", "union"):
        raise ValueError(f"plan_vocab mode must be 'base' or 'union', not {mode!r}")
    if len(embedding_rows) != len(paths) or not 0 <= reference < len(paths):
        raise ValueError(f"{len(paths)} paths, {len(embedding_rows)} embedding row counts, reference {reference}")
    if len(set(priority)) != len(priority) or any(not 0 <= index < len(paths) for index in priority):
        raise ValueError(f"priority {priority} must list distinct input indices below {len(paths)}")
    order = list(priority) + [index for index in range(len(paths)) if index not in priority]
    tokenizers = [load_tokenizer(path) for path in paths]
    vocabs = [tokenizer.get_vocab() for tokenizer in tokenizers]
    specials = [_specials(tokenizer) for tokenizer in tokenizers]
    out_vocab = dict(vocabs[reference])
    first_new_id = max(out_vocab.values(), default=-1) + 1
    new_tokens: list[tuple[str, bool]] = []
    options: dict[str, dict[str, bool]] = {}
    if mode == "union":
        for index in order:
            added = {token.content: token for token in tokenizers[index].added_tokens_decoder.values()}
            for token in sorted(set(vocabs[index]) - set(out_vocab), key=vocabs[index].__getitem__):
                out_vocab[token] = first_new_id + len(new_tokens)
                new_tokens.append((token, token in specials[index]))
                if token in added:
                    options[token] = _added_token_flags(added[token])
    tokens = list(out_vocab)
    out_ids = torch.tensor([out_vocab[token] for token in tokens], dtype=torch.long)
    out_rows = max(embedding_rows[reference], int(out_ids.max()) + 1 if len(tokens) else 0)
    is_token_row = torch.zeros(out_rows, dtype=torch.bool)
    is_token_row[out_ids] = True
    sources = [_row_sources(vocab, rows, tokens, out_ids, is_token_row) for vocab, rows in zip(vocabs, embedding_rows)]
    dropped = [sorted(set(vocab) - set(out_vocab), key=vocab.__getitem__) for vocab in vocabs]
    alignment = VocabAlignment(
        mode=mode, out_rows=out_rows, sources=sources, new_tokens=new_tokens, paths=list(paths), reference=reference,
        priority=order, embedding_rows=list(embedding_rows), output_tokens=len(out_vocab), first_new_id=first_new_id,
        padding_rows=int((~is_token_row).sum()), dropped_tokens=[len(tokens) for tokens in dropped],
        dropped_special=[[t for t in tokens if t in special] for tokens, special in zip(dropped, specials)],
        new_token_options=options)
    _log_losses(alignment)
    return alignment


def write_output_tokenizer(reference_path: str | Path, alignment: VocabAlignment, out_dir: str | Path) -> int:
    """Save the output tokenizer into ``out_dir`` and return its number of tokens.

    ``base`` keeps the reference tokenizer files already copied there, untouched. ``union`` loads the
    reference tokenizer, adds the new tokens in order (special ones as special, keeping the owner's
    added-token flags such as lstrip / normalized), checks that each got its planned id and saves over
    the copied files. Carry the chat template and special-token settings over *after* this call.
    """
    if alignment.mode != "union" or not alignment.new_tokens:
        return alignment.output_tokens
    from tokenizers import AddedToken

    tokenizer = load_tokenizer(reference_path)
    added = []
    for token, special in alignment.new_tokens:
        flags = {"normalized": not special, **alignment.new_token_options.get(token, {}), "special": special}
        added.append(AddedToken(token, **flags))
    tokenizer.add_tokens(added)
    got_ids = tokenizer.convert_tokens_to_ids([token for token, _ in alignment.new_tokens])
    wrong = [(token, planned, got) for planned, ((token, _), got)
             in enumerate(zip(alignment.new_tokens, got_ids), alignment.first_new_id) if got != planned]
    if wrong:
        shown = ", ".join(f"{token!r} got id {got}, not {planned}" for token, planned, got in wrong[:SHOWN_TOKENS])
        raise ModelError(f"{reference_path}: the tokenizer numbered the added tokens differently from the aligned "
                         f"embedding rows ({shown}); use vocab: base for this tokenizer")
    tokenizer.save_pretrained(str(out_dir))
    return len(tokenizer)


def _specials(tokenizer) -> set[str]:
    marked = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    return set(tokenizer.all_special_tokens) | marked


def _added_token_flags(token) -> dict[str, bool]:
    return {flag: bool(getattr(token, flag)) for flag in ("single_word", "lstrip", "rstrip", "normalized")}


def _row_sources(vocab: dict[str, int], rows: int, tokens: list[str], out_ids: torch.Tensor,
                 is_token_row: torch.Tensor) -> torch.Tensor:
    """For each output row, the row of this input holding the same token (or its own padding row), else -1."""
    out_rows = is_token_row.numel()
    own_ids = torch.tensor([vocab.get(token, -1) for token in tokens], dtype=torch.long)
    present = (own_ids >= 0) & (own_ids < rows)
    sources = torch.full((out_rows,), -1, dtype=torch.long)
    sources[out_ids[present]] = own_ids[present]
    limit = min(rows, out_rows)
    used = torch.zeros(limit, dtype=torch.bool)
    all_ids = torch.tensor(list(vocab.values()), dtype=torch.long)
    used[all_ids[all_ids < limit]] = True
    padding = (~is_token_row[:limit] & ~used).nonzero().squeeze(1)
    sources[padding] = padding
    return sources


def _gather_rows(out: torch.Tensor, source: torch.Tensor, rows: torch.Tensor) -> None:
    """``out = source[rows]`` in float32, a block of rows at a time (contiguous writes: the fast path)."""
    step = _block_rows(source)
    for start in range(0, rows.numel(), step):
        block = slice(start, start + step)
        out[block].copy_(source.index_select(0, rows[block]))


def _copy_rows(out: torch.Tensor, positions: torch.Tensor, source: torch.Tensor, rows: torch.Tensor) -> None:
    """``out[positions] = source[rows]`` in float32, a block of rows at a time."""
    step = _block_rows(source)
    for start in range(0, positions.numel(), step):
        block = slice(start, start + step)
        out.index_copy_(0, positions[block], source.index_select(0, rows[block]).to(torch.float32))


def _block_rows(source: torch.Tensor) -> int:
    row_bytes = source[0].numel() * source.element_size() if source.shape[0] else 1
    return max(1, COPY_BLOCK_BYTES // max(1, row_bytes))


def _log_losses(alignment: VocabAlignment) -> None:
    log = get_logger()
    for path, tokens in zip(alignment.paths, alignment.dropped_special):
        if tokens:
            log.warning("vocab: %s: %d special token(s) are not in the output vocabulary (%s); a chat template that "
                        "uses them will break; vocab: union keeps them", path, len(tokens), _examples(tokens))
    missing = int((alignment.donor_input < 0).sum())
    if missing:
        log.warning("vocab: %d embedding row(s) exist in no input (token ids beyond every embedding); they are "
                    "zeros in the output", missing)


def _difference(ref_path: str, ref: dict[str, int], other_path: str, other: dict[str, int]) -> str:
    extra = sorted(set(other) - set(ref), key=other.__getitem__)
    lacking = sorted(set(ref) - set(other), key=ref.__getitem__)
    moved = sorted((token for token in set(ref) & set(other) if ref[token] != other[token]), key=ref.__getitem__)
    phrases = []
    if extra:
        phrases.append(f"{other_path} has {_count(extra)} {ref_path} lacks ({_examples(extra)})")
    if lacking:
        phrases.append(f"{ref_path} has {_count(lacking)} {other_path} lacks ({_examples(lacking)})")
    if moved:
        example = moved[0]
        verb = "maps" if len(moved) == 1 else "map"
        phrases.append(f"{_count(moved)} {verb} to different ids in {ref_path} and {other_path} "
                       f"(e.g. {example!r}: {ref[example]} vs {other[example]})")
    return "; ".join(phrases)


def _count(tokens: list[str]) -> str:
    return f"{len(tokens)} token{'s' if len(tokens) != 1 else ''}"


def _examples(tokens: list[str]) -> str:
    shown = [token if token.isprintable() and not token.isspace() and token.strip() == token else repr(token)
             for token in tokens[:SHOWN_TOKENS]]
    return ", ".join(shown) + (f", ... and {len(tokens) - SHOWN_TOKENS} more" if len(tokens) > SHOWN_TOKENS else "")
