"""The ``hf_local`` backend: a local transformers causal LM as the teacher, with micro-batching.

Why micro-batching: the runner sends requests one at a time from many concurrent tasks, but a GPU
generates a batch of prompts almost as fast as one. :meth:`HFLocalTeacher.complete` therefore only
queues the request and awaits a future; one background worker task per event loop takes the
oldest waiting request, waits ``batch_wait_s`` (a few ms) for more, and generates together up to
``batch_size`` requests that share the same :class:`Sampling` (others wait for the next batch, in
arrival order). Batches run one at a time in a worker thread (``asyncio.to_thread``) so the event
loop keeps serving.

Generation rules:

- The prompt is ``tokenizer.apply_chat_template(messages, add_generation_prompt=True)``; a tokenizer
  without a chat template is a :class:`TeacherError` (use an instruct/chat model).
- Prompts are left-padded with the pad token (else the smallest EOS id, else id 0) and masked.
- ``temperature == 0`` -> greedy (``do_sample=False``); otherwise sampling with ``temperature`` and
  ``top_p``, after ``torch.manual_seed(seed)`` when ``seed`` is set. The seed fixes a whole batch, so
  a sampled answer also depends on which requests shared its batch. Other generation settings
  (``top_k``, repetition penalty) come from the model's ``generation_config``.
- EOS ids are the union of ``generation_config.eos_token_id`` and the tokenizer's EOS token.
  ``completion_tokens`` counts the new tokens up to and including the first EOS (``finish_reason``
  "stop"), or all ``max_tokens`` of them ("length"); the text decodes the tokens before the EOS
  with special tokens skipped. ``prompt_tokens`` counts the prompt without padding.
- ``request.json_schema`` is enforced by constrained decoding (:mod:`adaptlab.teacher.constrained`)
  unless ``teacher.constrained`` is ``off`` (or ``auto`` with a tokenizer llguidance cannot read):
  every token must extend JSON that the schema allows, EOS only once the JSON is complete. Each
  answer records ``constrained``. Constrained answers are cached under their own key (the decoding
  mode is part of it), so switching the setting never returns answers decoded the other way.
  Rows with and without a schema share a batch; rows without one decode freely.

Loading never downloads when ``HF_HUB_OFFLINE=1`` (transformers then reads local paths and the HF
cache only).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from adaptlab.models.gguf import resolve_model
from adaptlab.runs import get_logger
from adaptlab.teacher.base import (
    Sampling,
    Teacher,
    TeacherError,
    TeacherRequest,
    TeacherResponse,
    Usage,
    cache_key,
)
from adaptlab.teacher.config import TeacherConfig
from adaptlab.teacher.constrained import JSONSchemaDecoding, tokenizer_support

DEFAULT_BATCH_WAIT_S = 0.005


def resolve_device(device: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise TeacherError(f"teacher.device {device!r} is not a torch device (use cpu, cuda, cuda:1 or auto)") from exc


@dataclass
class _Pending:
    request: TeacherRequest
    prompt_ids: list[int]
    grammar: str | None  # llguidance grammar of the request's schema when decoding under it
    future: asyncio.Future[TeacherResponse]


class HFLocalTeacher(Teacher):
    """A local causal LM answering chat requests in micro-batches."""

    backend = "hf_local"

    def __init__(
        self,
        hf_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_name: str,
        batch_size: int = 8,
        batch_wait_s: float = DEFAULT_BATCH_WAIT_S,
        constrained: str = "auto",
    ):
        super().__init__(model_name)
        _require_chat_template(tokenizer, model_name)
        self.hf_model = hf_model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.batch_wait_s = batch_wait_s
        self.eos_ids = _eos_ids(hf_model, tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids, default=0)
        self.constrained = constrained
        self.decoding = self._schema_decoding(constrained)
        self.generate_seconds = 0.0
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._worker_loop: asyncio.AbstractEventLoop | None = None
        self._unresolved: set[asyncio.Future[TeacherResponse]] = set()
        self._closed = False

    def _schema_decoding(self, constrained: str) -> JSONSchemaDecoding | None:
        """The constrained decoder for ``teacher.constrained``, or None to decode freely."""
        if constrained == "off":
            return None
        vocab_size = self.hf_model.get_output_embeddings().weight.shape[0]
        decoding, reason = tokenizer_support(self.tokenizer, self.eos_ids, vocab_size)
        if decoding is None and constrained == "on":
            raise TeacherError(
                f"teacher.constrained is 'on' but llguidance cannot read the tokenizer of {self.model!r} ({reason}); "
                "use a model with a byte-level BPE or SentencePiece tokenizer, or set teacher.constrained: auto or off"
            )
        if decoding is None:
            get_logger().info("teacher %s: no constrained decoding, llguidance cannot read its tokenizer (%s); "
                              "answers are decoded freely and parsed from text", self.model, reason)
        return decoding

    def _decodes_under_schema(self, request: TeacherRequest) -> bool:
        return self.decoding is not None and request.json_schema is not None

    def cache_key(self, request: TeacherRequest) -> str:
        """Constrained answers are cached apart from free ones (the base key plus ``decoding``)."""
        decoding = "json_schema" if self._decodes_under_schema(request) else None
        return cache_key(self.backend, self.model, request, decoding)

    def prepare_json_schema(self, schema: dict[str, Any], where: str) -> None:
        super().prepare_json_schema(schema, where)
        if self.decoding is not None:
            self.decoding.grammar(schema, where)

    @classmethod
    def from_pretrained(cls, name_or_path: str, *, device: str = "auto", batch_size: int = 8,
                        constrained: str = "auto") -> HFLocalTeacher:
        target = resolve_device(device)
        model_dir = resolve_model(name_or_path, "teacher.model")
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            _require_chat_template(tokenizer, name_or_path)  # before loading the weights
            hf_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="auto")
        except (OSError, ValueError) as exc:
            raise TeacherError(
                f"cannot load teacher model {name_or_path!r} (teacher.model) as a causal LM: {exc}. "
                "Give a local model directory or a hub name already in the HF cache (nothing is downloaded "
                "while HF_HUB_OFFLINE=1)."
            ) from exc
        return cls(hf_model.to(target), tokenizer, model_name=name_or_path, batch_size=batch_size,
                   constrained=constrained)

    @classmethod
    def from_config(cls, cfg: TeacherConfig) -> HFLocalTeacher:
        return cls.from_pretrained(cfg.model, device=cfg.device, batch_size=cfg.batch_size,
                                   constrained=cfg.constrained)

    async def complete(self, request: TeacherRequest) -> TeacherResponse:
        if self._closed:
            raise TeacherError(f"teacher {self.model!r} is closed; cannot answer {request.describe()}")
        prompt_ids = self._prompt_ids(request)
        grammar = None
        if self._decodes_under_schema(request):
            grammar = self.decoding.grammar(request.json_schema, f"request {request.describe()}")
        queue = self._ensure_worker()
        future: asyncio.Future[TeacherResponse] = asyncio.get_running_loop().create_future()
        self._unresolved.add(future)
        future.add_done_callback(self._unresolved.discard)
        queue.put_nowait(_Pending(request, prompt_ids, grammar, future))
        return await future

    def _prompt_ids(self, request: TeacherRequest) -> list[int]:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        try:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                     return_dict=False)
        except Exception as exc:  # jinja raises e.g. "System role not supported" from inside the template
            raise TeacherError(f"the chat template of {self.model!r} rejected {request.describe()}: {exc}") from exc
        return list(ids)

    def _ensure_worker(self) -> asyncio.Queue[_Pending]:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done() or self._worker_loop is not loop:
            self._queue = asyncio.Queue()
            self._worker_loop = loop
            self._worker = loop.create_task(self._serve(self._queue), name=f"hf_local-{self.model}")
        return self._queue

    async def _serve(self, queue: asyncio.Queue[_Pending]) -> None:
        """Form batches forever: oldest request first, then everything waiting with the same sampling."""
        waiting: list[_Pending] = []
        while True:
            if not waiting:
                waiting.append(await queue.get())
            _drain(queue, waiting)
            if _count_same_sampling(waiting) < self.batch_size and self.batch_wait_s > 0:
                await asyncio.sleep(self.batch_wait_s)
                _drain(queue, waiting)
            sampling = waiting[0].request.sampling
            batch = [p for p in waiting if p.request.sampling == sampling][: self.batch_size]
            chosen = {id(p) for p in batch}
            waiting = [p for p in waiting if id(p) not in chosen]
            live = [p for p in batch if not p.future.done()]  # callers that gave up are skipped
            if live:
                await self._answer_batch(live, sampling)

    async def _answer_batch(self, batch: list[_Pending], sampling: Sampling) -> None:
        try:
            responses = await asyncio.to_thread(self._generate, batch, sampling)
        except torch.OutOfMemoryError:
            error = TeacherError(
                f"out of memory generating a batch of {len(batch)} with {self.model!r}; "
                "lower teacher.batch_size or sampling.max_tokens"
            )
            _fail(batch, error)
            return
        except Exception as exc:
            _fail(batch, exc)
            return
        for pending, response in zip(batch, responses):
            if not pending.future.done():
                pending.future.set_result(response)

    def _generate(self, batch: list[_Pending], sampling: Sampling) -> list[TeacherResponse]:
        """Left-pad, generate (each row under its grammar, if any), cut each row at its first EOS.

        Runs in a worker thread.
        """
        started = time.perf_counter()
        prompts = [p.prompt_ids for p in batch]
        width = max(len(ids) for ids in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros_like(input_ids)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids):] = 1
        options: dict[str, Any] = {"max_new_tokens": sampling.max_tokens, "pad_token_id": self.pad_id}
        if self.eos_ids:
            options["eos_token_id"] = sorted(self.eos_ids)
        if sampling.temperature == 0:
            options["do_sample"] = False
        else:
            options.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
            if sampling.seed is not None:
                torch.manual_seed(sampling.seed)
        if any(p.grammar is not None for p in batch):
            options["logits_processor"] = LogitsProcessorList(
                [self.decoding.logits_processor([p.grammar for p in batch])])
        device = self.hf_model.device
        with torch.inference_mode():
            output = self.hf_model.generate(
                input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), **options
            )
        responses = []
        for pending, new_tokens in zip(batch, output[:, width:].tolist()):
            end = next((i for i, token in enumerate(new_tokens) if token in self.eos_ids), None)
            text_tokens = new_tokens if end is None else new_tokens[:end]
            responses.append(TeacherResponse(
                text=self.tokenizer.decode(text_tokens, skip_special_tokens=True),
                usage=Usage(prompt_tokens=len(pending.prompt_ids),
                            completion_tokens=len(new_tokens) if end is None else end + 1),
                model=self.model,
                finish_reason="length" if end is None else "stop",
                constrained=None if pending.request.json_schema is None else pending.grammar is not None,
            ))
        self.generate_seconds += time.perf_counter() - started
        return responses

    def describe(self) -> dict[str, Any]:
        """Also the decoding mode and, when constraining, the seconds spent on masks vs all of generation."""
        described = {"backend": self.backend, "model": self.model, "device": str(self.hf_model.device),
                     "batch_size": self.batch_size, "constrained": self.constrained,
                     "schema_decoding": self.decoding is not None}
        if self.decoding is not None:
            described.update(constraint_seconds=round(self.decoding.timer.seconds, 3),
                             constraint_steps=self.decoding.timer.steps,
                             generate_seconds=round(self.generate_seconds, 3))
        return described

    async def aclose(self) -> None:
        """Stop the worker and fail requests still waiting; a batch already generating finishes in its thread."""
        self._closed = True
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for future in list(self._unresolved):
            if not future.done():
                future.set_exception(TeacherError(f"teacher {self.model!r} was closed before answering"))


def _require_chat_template(tokenizer: PreTrainedTokenizerBase, model_name: str) -> None:
    if tokenizer.chat_template is None:
        raise TeacherError(
            f"the tokenizer of {model_name!r} (teacher.model) has no chat template; use an instruct/chat model "
            "or add a chat_template (chat_template.jinja) to its directory"
        )


def _eos_ids(hf_model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = getattr(getattr(hf_model, "generation_config", None), "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    ids.discard(None)
    return ids


def _drain(queue: asyncio.Queue[_Pending], waiting: list[_Pending]) -> None:
    while not queue.empty():
        waiting.append(queue.get_nowait())


def _count_same_sampling(waiting: list[_Pending]) -> int:
    return sum(p.request.sampling == waiting[0].request.sampling for p in waiting)


def _fail(batch: list[_Pending], error: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
