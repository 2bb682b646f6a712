"""The ``teacher:`` config section shared by every recipe that talks to a teacher LLM.

Example (OpenAI-compatible server; the same block serves OpenAI, vLLM, SGLang, Ollama,
llama.cpp's server and TGI)::

    teacher:
      backend: openai
      model: gpt-4o
      base_url: https://api.openai.com/v1
      api_key_env: OPENAI_API_KEY        # the key itself is read from this variable only
      concurrency: 16
      requests_per_minute: 500
      tokens_per_minute: 200000
      price_input_per_million: 2.50
      price_output_per_million: 10.00
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from adaptlab.config import StrictModel
from adaptlab.runs import user_cache_dir


def default_cache_path() -> str:
    """``teacher-cache.sqlite`` in adaptlab's cache folder (:func:`adaptlab.runs.user_cache_dir`)."""
    return str(user_cache_dir() / "teacher-cache.sqlite")


class SamplingConfig(StrictModel):
    temperature: float = Field(0.7, ge=0, le=2, description="sampling temperature (0: greedy)")
    top_p: float = Field(
        1.0, gt=0, le=1, description="nucleus sampling: keep the smallest set of tokens with this total probability")
    max_tokens: int = Field(
        2048, ge=1, description="answer tokens at most; a longer answer is cut and counted as truncated")
    seed: int | None = Field(0, description="sampling seed sent with each request (servers may ignore it); null: none")


class TeacherConfig(StrictModel):
    """Which teacher to ask and how hard to push it."""

    backend: Literal["openai", "hf_local", "replay"] = Field(
        "openai", description="openai: any OpenAI-compatible server; hf_local: a local transformers model; replay: "
        "answers from a cassette")
    model: str = Field("gpt-4o", description="model name sent to the server, or HF name/path for hf_local")
    # openai
    base_url: str | None = Field(None, description="server URL ending in /v1; default: the openai package's")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
    structured_output: Literal["auto", "json_schema", "off"] = Field(
        "auto", description="auto: JSON-schema output, falling back to free text if the server refuses it")
    timeout_s: float = Field(
        120, gt=0, description="seconds one attempt may take before it counts as a timeout and is retried")
    # hf_local
    device: str = Field("auto", description="hf_local: cpu, cuda, cuda:1, ... or auto")
    batch_size: int = Field(8, ge=1, description="hf_local: prompts generated together")
    constrained: Literal["auto", "on", "off"] = Field(
        "auto", description="hf_local: decode answers to requests with a JSON schema under that schema (llguidance), "
        "so they are schema-valid JSON unless max_tokens cuts them. auto: when the tokenizer allows it (byte-level "
        "BPE, SentencePiece), else free decoding, logged; on: constrained or an error; off: free decoding")
    # replay / record
    cassette: str | None = Field(None, description="replay: cassette to read; with record: cassette to write")
    record: bool = Field(False, description="answer with the real backend and append each answer to the cassette")
    # runner
    concurrency: int = Field(8, ge=1, description="requests in flight at once")
    requests_per_minute: float | None = Field(
        None, gt=0, description="rate limit on requests started per minute; null: none")
    tokens_per_minute: float | None = Field(
        None, gt=0, description="rate limit on prompt + completion tokens per minute; null: none")
    max_retries: int = Field(6, ge=0, description="retries of 429 / 5xx / timeouts, with exponential backoff")
    stop_after_timeouts: int | None = Field(
        6, ge=1, description="stop the run when this many attempts in a row time out with no answer between them: "
        "the server is slower than timeout_s, and retrying would only pile up abandoned generations on it; null: "
        "never stop")
    warn_failed_share: float = Field(0.1, ge=0, le=1, description="warn (console, log, report) when more than this "
                                     "share of a stage's requests failed after their retries")
    backoff_initial_s: float = Field(
        1.0, gt=0, description="first retry waits up to this long (full-jitter exponential backoff)")
    backoff_max_s: float = Field(
        60.0, gt=0, description="ceiling of the backoff (a server's retry-after hint may ask for longer)")
    price_input_per_million: float = Field(0.0, ge=0, description="USD per million prompt tokens")
    price_output_per_million: float = Field(0.0, ge=0, description="USD per million completion tokens")
    cache: bool = Field(True, description="persist answers so reruns send no repeated requests")
    cache_path: str = Field(default_factory=default_cache_path, description="the SQLite answer cache")
    sampling: SamplingConfig = Field(
        SamplingConfig(), description="temperature, top_p, max_tokens and seed of every request")
