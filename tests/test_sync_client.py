"""``tokgen.client.TokgenClient``, the synchronous client, against a real server over a
socket (tiny codec; the session's tiny Llama for both levels, on both engines): arrays or
paths in, numpy out, and a call refused by full admission retried after the server's
``RetryInfo`` delay."""

from __future__ import annotations

import logging
import threading
import time

import grpc
import numpy as np
import pytest

from tests.test_serve import wait_until, wav
from tokgen.client import TokgenClient
from tokgen.codec import load_codec
from tokgen.errors import ServerError
from tokgen.generation.generator import Generator
from tokgen.generation.sampler import LevelPrior
from tokgen.serve.admission import Admission
from tokgen.serve.server import build_server, mark_live, mark_ready
from tokgen.serve.service import RETRY_AFTER_S
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc


@pytest.fixture
def server(loop_thread, engine, tiny_model_dir):
    """A ready server (one continuation at a time, none waiting): its address and servicer."""
    codec = load_codec(tiny_model_dir)
    priors = [LevelPrior(engine, n_ctx=32), LevelPrior(engine, n_ctx=32, segment_frames=40)]

    async def start():
        server, servicer, health, port = build_server("127.0.0.1:0", Admission(max_active=1, max_queued=0))
        await server.start()
        await mark_live(health)
        await mark_ready(servicer, health, Generator(codec, priors))
        return server, servicer, port

    grpc_server, servicer, port = loop_thread.run(start())
    yield f"127.0.0.1:{port}", servicer
    loop_thread.run(grpc_server.stop(None))


def test_arrays_or_paths_in_numpy_out(server, tone, tmp_path):
    address, _ = server
    (tmp_path / "prime.wav").write_bytes(wav(tone[:800]))
    with TokgenClient(address) as client:
        assert client.model_info().sample_rate == 16000
        from_path = client.continue_audio(tmp_path / "prime.wav", seconds=0.1, seed=3)
        assert from_path.dtype == np.float32 and from_path.shape == (1600,)
        both = client.continue_audio(tone[:800], 16000, 0.1, seed=3, num_samples=2)
        assert both.shape == (2, 1600) and list(client.last_summary.seeds) == [3, 4]
        assert np.abs(both[0] - from_path).max() <= 1.5 / 32767  # the same seed: the same audio
        assert np.abs(both[0] - both[1]).max() > 2 / 32767  # another seed: other audio (beyond rounding)
        stereo = np.stack([tone[:2205], tone[:2205]])  # (channels, samples) at 44.1 kHz
        pieces = list(client.stream_audio(stereo, 44100, 0.1, seed=3, sample_rate=22050))
        assert {p.sample_rate for p in pieces} == {22050} and {p.sample_index for p in pieces} == {0}
        assert sum(p.audio.size for p in pieces) == 2205 and pieces[0].offset_seconds == 0
        with pytest.raises(ServerError) as err:  # not retried: only a refusal for now is
            client.continue_audio(tone[:800], 16000, 0.1, num_samples=9)
        assert err.value.status == "INVALID_ARGUMENT" and "num_samples" in str(err.value)


def hold_the_only_slot(address: str) -> tuple[grpc.Channel, grpc.Future]:
    channel = grpc.insecure_channel(address)
    call = pb_grpc.TokgenServiceStub(channel).Continue(
        pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=30.0), timeout=120
    )
    assert next(call).WhichOneof("event") == "chunk"  # generating: the slot is taken
    return channel, call


def test_a_refusal_for_now_is_retried_after_the_hinted_delay_and_succeeds(server, tone, caplog):
    address, servicer = server
    channel, call = hold_the_only_slot(address)
    result: dict = {}

    def continue_in_thread() -> None:
        with TokgenClient(address) as client:
            started = time.monotonic()
            result["audio"] = client.continue_audio(tone[:800], 16000, 0.1, seed=3)
            result["seconds"] = time.monotonic() - started

    caplog.set_level(logging.INFO, logger="tokgen.client")
    thread = threading.Thread(target=continue_in_thread)
    thread.start()
    wait_until(lambda: "server busy" in caplog.text, "the first attempt was not refused")
    call.cancel()  # the slot frees well before the hinted delay is over
    wait_until(lambda: servicer.admission.active == 0, "the cancelled call kept its slot")
    thread.join(timeout=120)
    channel.close()
    assert f"retrying in {RETRY_AFTER_S:.1f} s (retry 1 of 3)" in caplog.text
    assert "retry 2" not in caplog.text  # the retry got the slot
    assert result["seconds"] >= RETRY_AFTER_S and result["audio"].shape == (1600,)


def test_retries_are_bounded(server, tone):
    address, _ = server
    channel, call = hold_the_only_slot(address)
    try:
        with TokgenClient(address, retries=2, max_retry_delay_s=0.2) as client:
            started = time.monotonic()
            with pytest.raises(ServerError) as err:
                client.continue_audio(tone[:800], 16000, 0.1)
            elapsed = time.monotonic() - started
    finally:
        call.cancel()
        channel.close()
    assert err.value.status == "RESOURCE_EXHAUSTED" and 0.4 <= elapsed < RETRY_AFTER_S
