"""In-process engine on transformers: batched waves over a KV cache.

Requests that are waiting when a wave starts are batched together (up to ``max_batch``):
prompts are left-padded, the wave runs one prefill and then one decode step per token for
all its rows, and each row streams its tokens as soon as they are sampled. Requests that
arrive during a wave wait for the next one (static batching: simpler than vLLM's
continuous batching, which is what the ``vllm`` backend is for). Model steps run in a
worker thread so the event loop keeps serving; an aborted row stops streaming at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, DynamicCache

from tokgen.engine.base import Engine, SamplingParams, StepStats
from tokgen.engine.sampling import sample_next
from tokgen.errors import CheckpointError, TokgenError

PAD_ID = 0


@dataclass
class _Request:
    id: str
    prompt: list[int]
    params: SamplingParams
    out: asyncio.Queue = field(default_factory=asyncio.Queue)  # list[int] chunks, then None
    produced: int = 0
    aborted: bool = False
    done: bool = False


class HFEngine(Engine):
    backend = "hf"

    def __init__(
        self, model_dir: str | Path, *, max_batch: int = 16, dtype: str = "float32", metrics_label: str = ""
    ):
        self.metrics_label = metrics_label
        try:
            self.model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), local_files_only=True, dtype=getattr(torch, dtype)
            ).eval()
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load prior {model_dir}: {exc}") from exc
        self.vocab_size = int(self.model.config.vocab_size)
        self.max_model_len = int(self.model.config.max_position_embeddings)
        self.max_batch = max_batch
        self._requests: dict[str, _Request] = {}
        self._pending: list[_Request] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None

    async def generate(
        self, request_id: str, prompt: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[list[int]]:
        self.check_request(prompt, params)
        if request_id in self._requests:
            raise TokgenError(f"request id {request_id!r} is already running")
        req = _Request(request_id, list(prompt), params)
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
            while self._pending:
                self._pending.sort(key=lambda r: r.params.priority)  # stable: first come first
                wave = [r for r in self._pending[: self.max_batch] if not r.aborted]
                del self._pending[: self.max_batch]
                if wave:
                    try:
                        await self._run_wave(wave)
                    except Exception as exc:  # a model error fails the wave's requests, not the engine
                        for r in wave:
                            if not r.done:
                                r.done = True
                                r.out.put_nowait(TokgenError(f"generation failed: {exc}"))

    async def _run_wave(self, wave: list[_Request]) -> None:
        width = max(len(r.prompt) for r in wave)
        ids = torch.tensor([[PAD_ID] * (width - len(r.prompt)) + r.prompt for r in wave])
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in wave])
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        seeds = [r.params.seed if r.params.seed is not None else random.getrandbits(63) for r in wave]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        params = [r.params for r in wave]
        cache = DynamicCache()
        prompt_tokens = sum(len(r.prompt) for r in wave)
        started = time.perf_counter()
        logits = await asyncio.to_thread(self._forward, ids, mask, positions, cache)
        while True:
            step_s = time.perf_counter() - started
            tokens = sample_next(logits, params, generators)
            stepped = 0
            for r, tok in zip(wave, tokens, strict=True):
                if r.done:
                    continue
                stepped += 1
                r.out.put_nowait([tok])
                r.produced += 1
                if r.produced >= r.params.max_tokens or r.aborted:
                    r.done = True
                    r.out.put_nowait(None)
            running = sum(not r.done for r in wave)
            # The wave's rows are its KV cache: a finished row's stays allocated until the wave ends.
            self.observe_step(
                StepStats(
                    running=running,
                    waiting=len(self._pending),
                    kv_cache_usage=len(wave) / self.max_batch if running else 0.0,
                    batch_size=stepped,
                    generated_tokens=stepped,
                    prompt_tokens=prompt_tokens,
                    step_seconds=step_s,
                )
            )
            prompt_tokens = 0
            if not running:
                return
            mask = torch.cat([mask, torch.ones(len(wave), 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
            step = torch.tensor(tokens)[:, None]
            started = time.perf_counter()
            logits = await asyncio.to_thread(self._forward, step, mask, positions, cache)

    @torch.inference_mode()
    def _forward(
        self, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, cache: object
    ) -> torch.Tensor:
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1]
