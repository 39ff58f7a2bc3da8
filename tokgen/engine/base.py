"""The engine interface: stream token ids for a prompt of token ids, abort on demand.

Requests are independent: each carries its own sampling parameters, seed and the token-id
range it may produce (one codec level's codes, see ``prior.layout``), so that requests of
any kind can share one engine and be batched together.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from tokgen.errors import TokgenError
from tokgen.monitoring import metrics

MAX_BIAS = 100.0  # what vLLM clamps a logit bias to


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1: off
    seed: int | None = None  # same seed, same prompt, same engine -> same tokens
    allowed: tuple[int, int] | None = None  # [start, stop): the only token ids that may be sampled
    priority: int = 0  # when the engine is full, lower values are started first
    # Added to the logits of the allowed ids (one value per id of ``allowed``), before the
    # temperature: steers sampling without a second model (e.g. towards the prime's key).
    bias: tuple[float, ...] | None = None

    def check(self, vocab_size: int) -> None:
        """Reject absurd parameters with a message that names the field."""
        if not 1 <= self.max_tokens <= 1_000_000:
            raise TokgenError(f"max_tokens must be in [1, 1000000], got {self.max_tokens}")
        if not 0.0 <= self.temperature <= 100.0:
            raise TokgenError(f"temperature must be in [0, 100], got {self.temperature}")
        if not 0 <= self.top_k <= vocab_size:
            raise TokgenError(f"top_k must be in [0, {vocab_size}], got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise TokgenError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise TokgenError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.allowed is not None:
            start, stop = self.allowed
            if not 0 <= start < stop <= vocab_size:
                raise TokgenError(f"allowed token range {self.allowed} is not inside [0, {vocab_size})")
        if self.bias is not None:
            if self.allowed is None or len(self.bias) != self.allowed[1] - self.allowed[0]:
                raise TokgenError("a logit bias needs an allowed token range of the same length")
            if not all(math.isfinite(b) and abs(b) <= MAX_BIAS for b in self.bias):
                raise TokgenError(f"logit biases must be finite and within +-{MAX_BIAS:g}")


@dataclass(frozen=True)
class StepStats:
    """What one engine step did, for the ``tokgen_engine_*`` metrics."""

    running: int  # sequences in the batch after the step
    waiting: int  # sequences waiting to join it
    kv_cache_usage: float  # 0-1
    batch_size: int  # sequences that got a token in this step
    generated_tokens: int
    prompt_tokens: int  # prefilled in this step
    step_seconds: float | None  # None: unknown for this step (e.g. prefill only)


class Engine(ABC):
    """One loaded causal LM that serves many concurrent requests."""

    backend: str
    # The ``level`` label of this engine's metrics: the prior level it serves ("" outside
    # a prior set, e.g. in engine benchmarks).
    metrics_label: str = ""
    vocab_size: int
    max_model_len: int
    # Whether several engines may be built at once from threads. vLLM loads models in its
    # own processes; transformers' from_pretrained is not thread-safe (two concurrent loads
    # here left one model with NaN outputs now and then).
    thread_safe_start: bool = False

    @abstractmethod
    def generate(
        self, request_id: str, prompt: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[list[int]]:
        """Yield the new token ids of one request as they are produced (at least one per
        chunk, ``params.max_tokens`` in all unless aborted)."""

    @abstractmethod
    async def abort(self, request_id: str) -> None:
        """Stop a request now and free what it holds; unknown or finished ids are ignored."""

    @abstractmethod
    def unfinished_requests(self) -> int:
        """Requests in flight (running or waiting): what a cancelled caller must not leave."""

    @abstractmethod
    async def close(self) -> None:
        """Release the model and any worker processes."""

    def observe_step(self, stats: StepStats) -> None:
        level = self.metrics_label
        metrics.ENGINE_RUNNING.labels(level).set(stats.running)
        metrics.ENGINE_WAITING.labels(level).set(stats.waiting)
        metrics.KV_CACHE_USAGE.labels(level).set(stats.kv_cache_usage)
        if stats.generated_tokens:
            metrics.GENERATED_TOKENS.labels(level).inc(stats.generated_tokens)
            metrics.BATCH_SIZE.labels(level).observe(stats.batch_size)
        if stats.prompt_tokens:
            metrics.PROMPT_TOKENS.labels(level).inc(stats.prompt_tokens)
        if stats.step_seconds is not None:
            metrics.STEP_SECONDS.labels(level).observe(stats.step_seconds)

    def check_request(self, prompt: Sequence[int], params: SamplingParams) -> None:
        params.check(self.vocab_size)
        if not prompt:
            raise TokgenError("prompt must hold at least one token")
        if min(prompt) < 0 or max(prompt) >= self.vocab_size:
            raise TokgenError(f"prompt token ids must be in [0, {self.vocab_size})")
        if len(prompt) + params.max_tokens > self.max_model_len:
            raise TokgenError(
                f"prompt ({len(prompt)}) + max_tokens ({params.max_tokens}) exceeds the model's "
                f"context of {self.max_model_len} tokens"
            )
