"""Stream primes prepared in worker processes (``generation.prepare_pool``): the same job
as in a thread, the user's errors as they are, and a worker that dies costs the requests
it held, not the pool."""

from __future__ import annotations

import asyncio
import io
import os
import signal

import numpy as np
import pytest
import soundfile as sf

from tokgen.generation.generator import Generator
from tokgen.generation.prepare_pool import PrepareWorkerLost
from tokgen.generation.spec import FieldError
from tokgen.v1 import tokgen_pb2 as pb


def wav(audio: np.ndarray, rate: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def generator(tiny_model_dir, prior_set):
    g = Generator.load(tiny_model_dir, prior_set, "hf")
    g.start_prepare_workers(1)
    yield g
    g.close()


def spec(g: Generator, prime: bytes):
    return g.spec_from_pb(pb.ContinueRequest(prime_audio=prime, seconds=1.0))


def test_a_worker_prepares_the_job_a_thread_would(generator, tone):
    s = spec(generator, wav(tone, generator.codec.sample_rate))
    pooled = asyncio.run(generator.aprepare(s, streaming=True))
    here = generator.prepare(s, streaming=True)
    assert (pooled.top_frames, pooled.start_top) == (here.top_frames, here.start_top)
    assert all(np.array_equal(a, b) for a, b in zip(pooled.known, here.known, strict=True))
    assert np.array_equal(pooled.reference, here.reference)


def test_a_bad_prime_fails_in_the_worker_with_its_field_named(generator):
    silent = wav(np.zeros(16000, np.float32), generator.codec.sample_rate)
    with pytest.raises(FieldError) as caught:
        asyncio.run(generator.aprepare(spec(generator, silent), streaming=True))
    assert caught.value.field == "prime_audio" and "silent" in caught.value.message


def kill_workers(generator: Generator) -> None:
    pool = generator._prepare_pool
    assert pool is not None
    for worker in list(pool._all):
        os.kill(worker.process.pid, signal.SIGKILL)


def test_a_worker_killed_mid_request_fails_that_request_and_the_next_is_served(generator, tone):
    rate = generator.codec.sample_rate
    long = spec(generator, wav(np.tile(tone, 60 * rate // tone.size + 1)[: 60 * rate], rate))

    async def kill_while_preparing():
        await generator.aprepare(long, streaming=True)  # the worker is up
        preparing = asyncio.ensure_future(generator.aprepare(long))  # all 60 s: a while
        await asyncio.sleep(0.05)
        kill_workers(generator)
        with pytest.raises(PrepareWorkerLost, match="worker process ended"):
            await preparing
        return await generator.aprepare(long, streaming=True)

    assert asyncio.run(kill_while_preparing()).start_top > 0


def test_requests_beyond_the_workers_wait_for_one_and_get_their_own_job(generator, tone):
    rate = generator.codec.sample_rate
    specs = [spec(generator, wav(tone * gain, rate)) for gain in (0.2, 0.5, 0.9)]

    async def at_once():
        return await asyncio.gather(*(generator.aprepare(s, streaming=True) for s in specs))

    jobs = asyncio.run(at_once())  # one worker: two of them wait
    for s, job in zip(specs, jobs, strict=True):
        alone = generator.prepare(s, streaming=True)
        assert all(np.array_equal(a, b) for a, b in zip(job.known, alone.known, strict=True))
        assert np.array_equal(job.reference, alone.reference)


def test_a_request_cancelled_while_preparing_leaves_its_worker_to_the_next(generator, tone):
    rate = generator.codec.sample_rate
    long = spec(generator, wav(np.tile(tone, 60 * rate // tone.size + 1)[: 60 * rate], rate))
    short = spec(generator, wav(tone, rate))

    async def cancel_then_prepare():
        await generator.aprepare(short, streaming=True)  # the worker is up
        preparing = asyncio.ensure_future(generator.aprepare(long))
        await asyncio.sleep(0.05)
        preparing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await preparing
        return await generator.aprepare(short, streaming=True)  # not the long one's reply

    job = asyncio.run(cancel_then_prepare())
    alone = generator.prepare(short, streaming=True)
    assert job.top_frames == alone.top_frames
    assert all(np.array_equal(a, b) for a, b in zip(job.known, alone.known, strict=True))


def test_an_event_loop_that_ends_mid_preparation_leaves_no_reply_to_the_next_request(generator, tone):
    """``asyncio.run`` returning while a worker prepares cancels every task, the shielded
    exchange too, and that reply stays unread in the worker's socket: the worker is started
    again rather than hand it to the next request (which would get another prime's job)."""
    rate = generator.codec.sample_rate
    long = spec(generator, wav(np.tile(tone, 60 * rate // tone.size + 1)[: 60 * rate], rate))
    short = spec(generator, wav(tone, rate))

    async def leave_mid_preparation():
        await generator.aprepare(short, streaming=True)  # the worker is up
        left = asyncio.ensure_future(generator.aprepare(long))  # all 60 s: a while
        await asyncio.sleep(0.05)
        assert not left.done()

    asyncio.run(leave_mid_preparation())
    job = asyncio.run(generator.aprepare(short, streaming=True))
    alone = generator.prepare(short, streaming=True)
    assert job.top_frames == alone.top_frames
    assert all(np.array_equal(a, b) for a, b in zip(job.known, alone.known, strict=True))


def test_a_worker_that_died_idle_costs_no_request(generator, tone):
    s = spec(generator, wav(tone, generator.codec.sample_rate))

    async def kill_then_prepare():
        await generator.aprepare(s, streaming=True)
        kill_workers(generator)
        await asyncio.sleep(0.5)  # the pool notices
        return await generator.aprepare(s, streaming=True)

    assert asyncio.run(kill_then_prepare()).start_top > 0


class _DiesWhenUnpickled:
    """Stands in for a codec that a worker cannot load: the worker exits while starting."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_worker_that_dies_while_starting_fails_the_start_and_does_not_hang():
    from concurrent.futures import ThreadPoolExecutor

    from tokgen.errors import TokgenError
    from tokgen.generation.prepare_pool import PreparePool

    with ThreadPoolExecutor(1) as starter:
        start = starter.submit(PreparePool, _DiesWhenUnpickled(), [], 2)  # type: ignore[arg-type]
        with pytest.raises(TokgenError, match=r"did not start \(exit code 3\)"):
            start.result(timeout=120)


def test_closing_the_pool_fails_the_request_it_prepares_and_those_waiting(generator, tone):
    from tokgen.generation.prepare_pool import PreparePool

    rate = generator.codec.sample_rate
    long = spec(generator, wav(np.tile(tone, 60 * rate // tone.size + 1)[: 60 * rate], rate))
    pool = PreparePool(generator.codec, generator.priors, 1)

    async def close_while_busy():
        preparing = asyncio.ensure_future(pool.prepare(long, False))  # all 60 s: a while
        waiting = asyncio.ensure_future(pool.prepare(long, False))  # no worker left for it
        await asyncio.sleep(0.1)
        await asyncio.to_thread(pool.close)
        return await asyncio.wait_for(asyncio.gather(preparing, waiting, return_exceptions=True), 30)

    results = asyncio.run(close_while_busy())
    assert all(isinstance(r, PrepareWorkerLost) for r in results), results
    assert not any(w.process.is_alive() for w in pool._all)
