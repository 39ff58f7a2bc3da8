"""Loading the configured codec and priors for a long-running process (server or worker),
and announcing which ones run (``tokgen_build_info``)."""

from __future__ import annotations

import asyncio

from tokgen.codec import DEFAULT_CODEC_DIR, load_codec
from tokgen.codec.base import Codec
from tokgen.engine.factory import resolve_backend
from tokgen.monitoring import metrics
from tokgen.prior.generate import DEFAULT_PRIORS_DIR, load_priors
from tokgen.prior.sampler import LevelPrior
from tokgen.settings import Settings


async def load_models(config: Settings, role: str) -> tuple[Codec, list[LevelPrior]]:
    """In threads, so the event loop keeps serving health checks meanwhile. The build info
    is set first: a process that is still loading (or failing to) already says what it is."""
    backend = resolve_backend(config.engine_backend)
    codec_dir, priors_dir = config.codec or DEFAULT_CODEC_DIR, config.priors or DEFAULT_PRIORS_DIR
    await asyncio.to_thread(metrics.set_build_info, role, backend, codec_dir, priors_dir)
    codec = await asyncio.to_thread(load_codec, config.codec)
    options = {"kv_cache_bytes": config.engine_kv_cache_bytes} if backend == "vllm" else {}
    priors = await asyncio.to_thread(load_priors, config.priors, codec, backend, **options)
    return codec, priors
