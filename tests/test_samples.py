"""Several samples per request, an output rate and a loudness target, over real gRPC (the
``served`` server of test_serve: tiny codec, both engines), and each sample's admission
slot."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from tests.test_serve import served, wait_until, wav  # noqa: F401 (served: a fixture)
from tokgen.generation.generator import Generator
from tokgen.loudness import integrated_loudness
from tokgen.serve.admission import Admission
from tokgen.serve.server import mark_ready
from tokgen.v1 import tokgen_pb2 as pb
from tokgen.v1 import tokgen_pb2_grpc as pb_grpc


def continue_(channel, tone, seed: int, **fields) -> tuple[dict[int, np.ndarray], list, pb.Summary]:
    """Every sample's audio (int16) by index, the chunks, the summary."""
    request = pb.ContinueRequest(prime_audio=wav(tone[:800]), seconds=0.1, **fields)
    request.sampling.seed = seed
    replies = list(pb_grpc.TokgenServiceStub(channel).Continue(request, timeout=120))
    chunks = [r.chunk for r in replies[:-1]]
    audio: dict[int, list[np.ndarray]] = {}
    for c in chunks:
        audio.setdefault(c.sample_index, []).append(np.frombuffer(c.pcm, "<i2").astype(int))
    return {i: np.concatenate(a) for i, a in audio.items()}, chunks, replies[-1].summary


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """The same audio but for rounding: streams decode in pieces cut where the codes were
    final, which moves a sample by at most one step (test_serve)."""
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1


def test_several_samples_stream_side_by_side_each_as_its_own_seed_would(served, tone):  # noqa: F811
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    samples, chunks, summary = continue_(channel, tone, 11, num_samples=3)
    assert sorted(samples) == [0, 1, 2] and all(a.size == 1600 for a in samples.values())
    for i in range(3):  # each sample's chunks in order, offsets from its own start
        offsets = [c.offset_seconds for c in chunks if c.sample_index == i]
        assert offsets[0] == 0 and offsets == sorted(offsets)
    assert list(summary.seeds) == [11, 12, 13] and summary.seed == 11
    assert [lv.tokens for lv in summary.levels] == [3 * 100, 3 * 200] and summary.audio_seconds == 0.1
    for i in range(3):  # sample i is what a one-sample request with seed 11 + i gets
        single, _, _ = continue_(channel, tone, 11 + i)
        assert close(samples[i], single[0])
    assert not close(samples[0], samples[1]) and not close(samples[1], samples[2])


def test_an_output_rate_and_loudness_reproduce_by_seed(served, tone):  # noqa: F811
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    fields = {"sample_rate": 44100, "loudness_lufs": -20.0, "num_samples": 2}
    samples, chunks, _ = continue_(channel, tone, 5, **fields)
    assert {c.format.sample_rate for c in chunks} == {44100}
    assert all(a.size == round(0.1 * 44100) for a in samples.values())  # exactly the seconds asked for
    for a in samples.values():
        assert integrated_loudness(a / 32767.0, 44100) == pytest.approx(-20.0, abs=0.05)
        assert np.abs(a).max() <= 32767 * 10 ** (-1 / 20) + 1  # the peak stays under -1 dBFS
    again, _, _ = continue_(channel, tone, 5, **fields)
    assert all(close(samples[i], again[i]) for i in range(2))
    assert not close(samples[0], samples[1])
    plain, _, _ = continue_(channel, tone, 5, sample_rate=44100)  # no loudness: streamed as made
    assert plain[0].size == 4410 and not close(plain[0], samples[0])


def test_a_request_holds_one_admission_slot_per_sample(served, tone):  # noqa: F811
    codec, priors, servicer, health, channel, loop_thread = served
    loop_thread.run(mark_ready(servicer, health, Generator(codec, priors)))
    servicer.admission = Admission(max_active=2, max_queued=0)
    stub = pb_grpc.TokgenServiceStub(channel)
    long = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=5.0, num_samples=2)
    call = stub.Continue(long, timeout=120)
    assert next(call).WhichOneof("event") == "chunk"
    assert servicer.admission.active == 2
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Continue(pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.05), timeout=60))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    call.cancel()  # both samples' engine requests go with the call
    wait_until(lambda: servicer.admission.active == 0, "the cancelled call kept its slots")
    wait_until(lambda: priors[0].engine.unfinished_requests() == 0, "engine requests outlived the call")
