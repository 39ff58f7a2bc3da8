"""What a caller gets back: BS.1770 loudness against known values (EBU Tech 3341's test
signals), normalisation that never clips, the output stream (soxr, as it streams) against
a whole resample, and the bounds every entry point checks."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soxr

from tokgen.generation.generate import Job
from tokgen.generation.instrument import DEFAULT_INSTRUMENT_GUIDANCE
from tokgen.generation.key import DEFAULT_KEY_GUIDANCE
from tokgen.generation.output import Output, OutputStream, finish_audio, output_samples
from tokgen.generation.queued import QueuedJob
from tokgen.generation.sampler import SamplingSettings
from tokgen.generation.spec import FieldError, check_continue
from tokgen.loudness import PEAK_CEILING_DBFS, integrated_loudness, normalize_loudness
from tokgen.v1 import tokgen_pb2 as pb

MONO = -3.0103  # a mono channel of EBU 3341's stereo signals reads 3 dB below them


def sine(dbfs: float, seconds: float, rate: int = 48000, hz: float = 997.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [48000, 44100, 16000, 8000])
def test_a_997_hz_sine_reads_its_known_loudness_at_any_rate(rate):
    """BS.1770's -0.691 offset cancels the K-weighting at 997 Hz: a sine of amplitude A
    reads 20 log10(A) - 3.01 LUFS."""
    assert integrated_loudness(sine(-20, 5, rate), rate) == pytest.approx(-20 + MONO, abs=0.02)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([(-23, 20)], -23),  # EBU Tech 3341 case 1
        ([(-33, 20)], -33),  # case 2
        ([(-36, 10), (-23, 60), (-36, 10)], -23),  # case 3: the relative gate
        ([(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)], -23),  # case 4: both gates
        ([(-26, 20), (-20, 20.1), (-26, 20)], -23),  # case 5
    ],
)
def test_the_gates_give_ebu_tech_3341s_values(parts, expected):
    audio = np.concatenate([sine(db, s) for db, s in parts])
    assert integrated_loudness(audio, 48000) == pytest.approx(expected + MONO, abs=0.1)  # 3341's tolerance


def test_the_k_weighting_lifts_highs_and_cuts_lows():
    """The filter's shape: the shelf's +4 dB at 10 kHz (less the 0.69 dB it already gives at
    1 kHz), and the RLB high-pass well below 1 kHz's at 30 Hz."""
    at_1k = integrated_loudness(sine(-20, 3, hz=1000), 48000)
    assert integrated_loudness(sine(-20, 3, hz=10000), 48000) - at_1k == pytest.approx(4.0 - 0.69, abs=0.1)
    assert integrated_loudness(sine(-20, 3, hz=30), 48000) - at_1k < -1.0


def test_normalising_reaches_the_target_and_never_clips():
    noise = np.random.default_rng(0).standard_normal(3 * 16000).astype(np.float32) * 0.05
    quiet = normalize_loudness(noise, 16000, -23.0)
    assert integrated_loudness(quiet, 16000) == pytest.approx(-23.0, abs=0.01)
    loud = normalize_loudness(noise, 16000, -5.0)  # noise at -5 LUFS would peak above full scale
    peak = 20 * np.log10(np.abs(loud).max())
    assert peak == pytest.approx(PEAK_CEILING_DBFS, abs=1e-3) and integrated_loudness(loud, 16000) < -6
    silence = np.zeros(16000, np.float32)
    assert np.array_equal(normalize_loudness(silence, 16000, -23.0), silence)


@pytest.mark.parametrize("rate", [16000, 8000, 22050, 44100, 48000])
def test_a_streamed_output_is_the_whole_resample_exactly_as_long_as_asked(rate):
    audio = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    whole = finish_audio(audio, 16000, Output(rate))
    assert whole.size == output_samples(16000, 16000, rate)
    np.testing.assert_array_equal(whole, soxr.resample(audio, 16000, rate, "HQ"))
    stream = OutputStream(Output(rate), 16000, 12000)  # pieces of any size, cut at 12000 samples in
    out = [stream.push(audio[i : i + 777]) for i in range(0, 12000, 777)]
    streamed = np.concatenate([*out, stream.finish()])
    assert streamed.size == output_samples(12000, 16000, rate)
    np.testing.assert_allclose(streamed[: rate // 2], whole[: rate // 2], atol=1e-6)


def test_a_loudness_target_holds_the_sample_until_it_is_complete():
    audio = np.random.default_rng(2).standard_normal(16000).astype(np.float32) * 0.1
    stream = OutputStream(Output(22050, -20.0), 16000, audio.size)
    assert all(stream.push(audio[i : i + 4000]).size == 0 for i in range(0, audio.size, 4000))
    out = stream.finish()
    assert out.size == 22050 and integrated_loudness(out, 22050) == pytest.approx(-20.0, abs=0.01)
    np.testing.assert_allclose(out, finish_audio(audio, 16000, Output(22050, -20.0)), atol=1e-6)


ANCESTRAL = {"mode": pb.MODE_ANCESTRAL, "seconds": 1.0}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"num_samples": 9}, "num_samples"),
        ({"sample_rate": 7999}, "sample_rate"),
        ({"sample_rate": 48001}, "sample_rate"),
        ({"loudness_lufs": -71}, "loudness_lufs"),
        ({"loudness_lufs": 0}, "loudness_lufs"),
        ({"loudness_lufs": float("nan")}, "loudness_lufs"),
        ({"num_samples": 8, "sampling": pb.SamplingParams(seed=2**63 - 2)}, "sampling.seed"),
        ({"sampling": pb.SamplingParams(key_guidance=-1.0)}, "sampling.key_guidance"),
        ({"sampling": pb.SamplingParams(key_guidance=20.5)}, "sampling.key_guidance"),
        ({"sampling": pb.SamplingParams(key_guidance=float("inf"))}, "sampling.key_guidance"),
        ({"sampling": pb.SamplingParams(instrument_guidance=-1.0)}, "sampling.instrument_guidance"),
        ({"sampling": pb.SamplingParams(instrument_guidance=20.5)}, "sampling.instrument_guidance"),
        ({"sampling": pb.SamplingParams(instrument_guidance=float("nan"))}, "sampling.instrument_guidance"),
    ],
)
def test_out_of_bounds_outputs_name_their_field(fields, field):
    with pytest.raises(FieldError) as err:
        check_continue(pb.ContinueRequest(**ANCESTRAL, **fields), 67, 32)
    assert err.value.field == field


def test_a_request_gives_each_sample_its_own_seed_and_the_output_it_asks_for():
    request = pb.ContinueRequest(**ANCESTRAL, num_samples=3, sample_rate=22050, loudness_lufs=-16)
    request.sampling.seed = 40
    spec = check_continue(request, 67, 32)
    assert [s.seed for s in spec.sample_settings()] == [40, 41, 42]
    assert spec.output == Output(22050, -16.0)
    default = check_continue(pb.ContinueRequest(**ANCESTRAL), 67, 32)
    assert default.num_samples == 1 and default.output == Output()
    assert default.settings.key_guidance == DEFAULT_KEY_GUIDANCE  # unset: the model's default
    assert default.settings.instrument_guidance == DEFAULT_INSTRUMENT_GUIDANCE
    request.sampling.key_guidance = 0.0  # set to 0: off, not the default
    request.sampling.instrument_guidance = 0.0
    off = check_continue(request, 67, 32).settings
    assert (off.key_guidance, off.instrument_guidance) == (0.0, 0.0)


def version(queued: bytes) -> int:
    with np.load(io.BytesIO(queued)) as archive:
        return json.loads(archive["meta"].tobytes())["version"]


def test_a_queued_job_keeps_its_output_and_one_without_stays_version_1():
    job = Job([np.arange(4), np.arange(8)], 10, 4)
    unguided = SamplingSettings(seed=3, key_guidance=0.0, instrument_guidance=0.0)
    plain = QueuedJob(job, unguided, 160)
    shaped = QueuedJob(job, unguided, 160, Output(44100, -23.0))
    guided = QueuedJob(job, SamplingSettings(seed=3, key_guidance=2.5, instrument_guidance=0.0), 160)
    instrument = QueuedJob(job, SamplingSettings(seed=3, key_guidance=0.0, instrument_guidance=1.5), 160)
    assert QueuedJob.loads(plain.dumps()).output == Output()
    # Old workers still run plain and shaped jobs; they refuse a guided one (version 3:
    # key guidance, 4: instrument guidance) rather than run it unguided.
    assert [version(q.dumps()) for q in (plain, shaped, guided, instrument)] == [1, 2, 3, 4]
    back = QueuedJob.loads(shaped.dumps())
    assert back.output == Output(44100, -23.0) and back.samples == 160 and back.settings.seed == 3
    assert back.settings.key_guidance == 0.0 and back.settings.instrument_guidance == 0.0
    assert QueuedJob.loads(guided.dumps()).settings == guided.settings
    assert QueuedJob.loads(instrument.dumps()).settings == instrument.settings
