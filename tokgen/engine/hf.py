"""In-process engine: a transformers Llama's weights, continuously batched over a static KV cache.

gpt-fast in shape (``static_llama``): one cache row per running request, preallocated;
every engine step decodes one token for each running row (attention over the real
context only) and prefills the requests admitted in that step (up to ``max_batch`` rows
in all, lowest ``priority`` first), so new requests join running ones between steps as
in vLLM. Sampling is on tensors (``sampling.sample_batch``: Gumbel-max with each
request's own generator, no ``torch.multinomial``), so a seed fixes a request's tokens
whatever it is batched with. Steps run in a worker thread so the event loop keeps
serving; an aborted row stops streaming at once and leaves the batch at the next step.
Only Llama checkpoints (all of tokgen's priors) are served; other models need ``vllm``.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tokgen.engine.base import Engine, SamplingParams, StepStats
from tokgen.engine.sampling import sample_batch
from tokgen.engine.static_llama import StaticLlama, supports
from tokgen.errors import CheckpointError, TokgenError


@dataclass
class _Request:
    id: str
    prompt: list[int]
    params: SamplingParams
    out: asyncio.Queue = field(default_factory=asyncio.Queue)  # list[int] chunks, then None
    generator: torch.Generator = field(default_factory=torch.Generator)
    produced: int = 0
    last: int = 0  # the last sampled token: the input of the row's next step
    aborted: bool = False
    done: bool = False

    @property
    def position(self) -> int:
        """Where ``last`` goes in the row's cache."""
        return len(self.prompt) + self.produced - 1


class HFEngine(Engine):
    backend = "hf"

    def __init__(
        self, model_dir: str | Path, *, max_batch: int = 64, dtype: str = "float32", metrics_label: str = ""
    ):
        self.metrics_label = metrics_label
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), local_files_only=True, dtype=getattr(torch, dtype)
            ).eval()
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load prior {model_dir}: {exc}") from exc
        if not supports(model):
            raise CheckpointError(
                f"the hf engine serves Llama checkpoints only; {model_dir} is "
                f"{type(model).__name__}: use the vllm backend"
            )
        self.vocab_size = int(model.config.vocab_size)
        self.max_model_len = int(model.config.max_position_embeddings)
        self.max_batch = max_batch
        self._model = StaticLlama(model, max_batch)
        self._requests: dict[str, _Request] = {}
        self._pending: list[_Request] = []
        self._running: list[_Request] = []  # request i owns cache row i
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None

    async def generate(
        self, request_id: str, prompt: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[list[int]]:
        self.check_request(prompt, params)
        if request_id in self._requests:
            raise TokgenError(f"request id {request_id!r} is already running")
        req = _Request(request_id, list(prompt), params)
        req.generator.manual_seed(params.seed if params.seed is not None else random.getrandbits(63))
        self._requests[request_id] = req
        self._pending.append(req)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run())
        self._wake.set()
        try:
            while (chunk := await req.out.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk
                yield chunk
        finally:
            req.aborted = True  # the consumer is gone (finished, cancelled or disconnected)
            self._requests.pop(request_id, None)

    async def abort(self, request_id: str) -> None:
        req = self._requests.get(request_id)
        if req is not None and not req.done:
            req.aborted = True
            req.done = True
            req.out.put_nowait(None)

    def unfinished_requests(self) -> int:
        return sum(not r.done and not r.aborted for r in self._requests.values())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        for rid in list(self._requests):
            await self.abort(rid)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._running or self._pending:
                admitted: list[_Request] = []
                try:
                    await self._step(admitted)
                except Exception as exc:  # a model error fails the batch's requests, not the engine
                    for r in self._running + admitted:
                        if not r.done:
                            r.done = True
                            r.out.put_nowait(TokgenError(f"generation failed: {exc}"))
                    self._running = []

    async def _step(self, admitted: list[_Request]) -> None:
        # Finished and aborted rows leave; the last running row takes each one's place.
        moves: list[tuple[int, int, int]] = []  # (from row, to row, positions)
        i = 0
        while i < len(self._running):
            r = self._running[i]
            if not (r.done or r.aborted):
                i += 1
                continue
            r.done = True
            last = self._running.pop()
            if last is not r:
                self._running[i] = last
                moves.append((len(self._running), i, last.position + 1))
        self._pending.sort(key=lambda r: r.params.priority)  # stable: first come first
        while self._pending and len(self._running) + len(admitted) < self.max_batch:
            if not (r := self._pending.pop(0)).aborted:
                admitted.append(r)
        running = list(self._running)
        if not running and not admitted:
            return
        started = time.perf_counter()
        tokens = await asyncio.to_thread(self._compute, moves, running, admitted)
        step_s = time.perf_counter() - started
        self._running += admitted
        stepped = 0
        for r, tok in zip(self._running, tokens, strict=True):
            if r.done:  # aborted meanwhile
                continue
            stepped += 1
            r.last = tok
            r.produced += 1
            r.out.put_nowait([tok])
            if r.produced >= r.params.max_tokens:
                r.done = True
                r.out.put_nowait(None)
        self.observe_step(
            StepStats(
                running=sum(not r.done for r in self._running),
                waiting=len(self._pending),
                kv_cache_usage=len(self._running) / self.max_batch,
                batch_size=stepped,
                generated_tokens=stepped,
                prompt_tokens=sum(len(r.prompt) for r in admitted),
                step_seconds=step_s if running else None,
            )
        )

    def _compute(
        self, moves: list[tuple[int, int, int]], running: list[_Request], admitted: list[_Request]
    ) -> list[int]:
        """In the worker thread: compact the cache, one decode step for ``running`` (rows
        0 ..), prefill ``admitted`` into the rows after them, and sample every row."""
        model = self._model
        for src, dst, length in moves:
            model.move_row(src, dst, length)
        model.reserve(len(running) + len(admitted))
        logits = []
        if running:
            positions = torch.tensor([r.position for r in running])
            tokens = torch.tensor([r.last for r in running])
            logits.append(model.decode(tokens, positions, int(positions.max()) + 1))
        if admitted:
            logits.append(model.prefill(len(running), [r.prompt for r in admitted]))
        rows = running + admitted
        return sample_batch(torch.cat(logits), [r.params for r in rows], [r.generator for r in rows])
