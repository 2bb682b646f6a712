"""Can this causal teacher be distilled into this student? Same token ids, and logits over the same vocabulary.

Logit distillation compares the two models' distributions token id by token id, and the teacher reads the
student's token ids. With another tokenizer both are wrong without any error: id 1234 is another word for the
teacher (TRL #2215, #3028, #4562 are users who trained on exactly that). So before training:

* :func:`tokenizer_differences` compares the teacher's own tokenizer (saved with it) with the student's: the
  vocabulary (token -> id, added tokens included), the ids of BOS, EOS and UNK (the encodings insert them), and
  the ids of a few probe texts (different merges or normalisation with the same vocabulary). The padding token is
  not compared: padded positions are never targets, and students often get one set for training. Any difference
  is refused, naming it.
* :func:`compared_vocabulary` looks at the embedding rows. Models are often saved with more output rows than their
  tokenizer has tokens (padded to a multiple of 64 or 128), and the teacher's and the student's padding may
  differ (torchtune #2119, #2416). When both cover every token of the shared tokenizer, the logits are cut to
  the smaller size at loss time (:func:`~adaptlab.tuning.distill.divergences.common_vocabulary`); the rows cut
  are padding rows beyond the tokenizer, never tokens. A model with fewer rows than the tokenizer has tokens
  is refused.
"""

from __future__ import annotations

from typing import Any

PROBES = (
    "The quick brown fox jumps over the lazy dog.",
    "  Leading spaces,\ttabs and\nnew lines; numbers 12345 and 3.14159.",
    "Ünïcödé àccents, naïve café, 日本語, emoji 🙂 and symbols <>{}[]#@$%^&*",
)
COMPARED_SPECIAL_TOKENS = ("bos_token_id", "eos_token_id", "unk_token_id")
SHOWN = 5  # differing tokens named in a message


def tokenizer_differences(student: Any, teacher: Any, texts: list[str] | tuple[str, ...] = ()) -> list[str]:
    """What differs between two tokenizers in the ids they give text (an empty list: they are interchangeable).

    ``texts`` (e.g. some training texts) are probed besides :data:`PROBES`.
    """
    differences = []
    student_vocab, teacher_vocab = student.get_vocab(), teacher.get_vocab()
    if student_vocab != teacher_vocab:
        only_student = sorted(set(student_vocab) - set(teacher_vocab), key=student_vocab.get)
        only_teacher = sorted(set(teacher_vocab) - set(student_vocab), key=teacher_vocab.get)
        moved = sorted((t for t in set(student_vocab) & set(teacher_vocab) if student_vocab[t] != teacher_vocab[t]),
                       key=student_vocab.get)
        parts = [f"vocabulary of {len(student_vocab)} tokens (student) vs {len(teacher_vocab)} (teacher)"]
        if only_student:
            parts.append(f"{len(only_student)} only in the student's (e.g. {only_student[:SHOWN]})")
        if only_teacher:
            parts.append(f"{len(only_teacher)} only in the teacher's (e.g. {only_teacher[:SHOWN]})")
        if moved:
            parts.append(f"{len(moved)} with another id (e.g. "
                         + ", ".join(f"{t!r}: {student_vocab[t]} vs {teacher_vocab[t]}" for t in moved[:SHOWN]) + ")")
        differences.append("; ".join(parts))
    for attribute in COMPARED_SPECIAL_TOKENS:
        ours, theirs = getattr(student, attribute, None), getattr(teacher, attribute, None)
        if ours != theirs:
            name = attribute.removesuffix("_id")
            differences.append(f"{name} {getattr(student, name, None)!r} (id {ours}) in the student's vs "
                               f"{getattr(teacher, name, None)!r} (id {theirs}) in the teacher's")
    if not differences:  # the same vocabulary can still split text differently (merges, normalisation)
        for text in (*PROBES, *texts):
            ours, theirs = student(text)["input_ids"], teacher(text)["input_ids"]
            if ours != theirs:
                differences.append(f"{text[:60]!r} encodes to {ours[:12]} with the student's tokenizer and to "
                                   f"{theirs[:12]} with the teacher's")
                break
    return differences


def output_rows(model: Any) -> int:
    """How many logits the model gives per position (rows of its output embedding)."""
    return int(model.get_output_embeddings().weight.shape[0])


def compared_vocabulary(student_rows: int, teacher_rows: int, tokenizer_size: int) -> tuple[int | None, str | None]:
    """``(size the logits are cut to, None)`` when the vocabularies are comparable (``None`` as size: no cut),
    else ``(None, why not)``."""
    smaller = min(student_rows, teacher_rows)
    if smaller < tokenizer_size:
        who = "student" if student_rows < tokenizer_size else "teacher"
        return None, (f"the {who} has {smaller} output rows but the tokenizer has {tokenizer_size} tokens, so some "
                      "tokens have no logit")
    return (smaller if student_rows != teacher_rows else None), None
