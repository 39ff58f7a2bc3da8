"""Hostile uploads, in process (issue 17): files built to cost far more to read than they
weigh are refused from their headers, at a memory cost that stays small whatever they
claim; valid but unusual files (WAVE_FORMAT_EXTENSIBLE) are read; a Redis password is never
printed; error messages quote no object reprs; checkpoints load without running code.

Memory is what ``tracemalloc`` sees (numpy reports its buffers to it), so a test fails the
moment a bound is missing, not when a machine runs out."""

from __future__ import annotations

import io
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_corpus import (
    codes_with_long_model,
    constant_flac,
    encoded,
    flac_claiming,
    good_codes,
    npz,
    stored_npz,
    tone,
    wav_header,
    with_total_frames,
    zip_claiming,
)
from tokgen.audio import (
    MAX_CHANNELS,
    MAX_DECODED_BYTES,
    MAX_SAMPLE_RATE,
    load_audio,
    resample,
)
from tokgen.codec.codes import MAX_ENTRIES, MAX_MODEL_CHARS, MAX_REFERENCE_SAMPLES, load_codes
from tokgen.errors import AudioError, CheckpointError, TokgenError
from tokgen.settings import redact_url
from tokgen.training import load_checkpoint
from tokgen.v1 import tokgen_pb2 as pb

SR = 16000
# The served codec's info, as a client sees it: what a codes file must match.
INFO = pb.GetModelInfoResponse(
    codec="tiny-test",
    sample_rate=SR,
    levels=[
        pb.LevelInfo(level=0, hop=256, codebook_size=64),
        pb.LevelInfo(level=1, hop=64, codebook_size=64),
    ],
)
# The server's bound for a continue's codes: (60 s prime + 600 s) at the finest hop.
MAX_FRAMES = 660 * SR // 64
MIB = 1 << 20


def traced_peak(call: Callable[[], object]) -> tuple[object, int]:
    """``call()``'s result (or the ``TokgenError`` it raised) and the peak of memory
    allocated while it ran (bytes, as tracemalloc counts them)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        try:
            result: object = call()
        except TokgenError as exc:
            result = exc
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---- 1. codes files --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_bomb() -> bytes:
    return codes_with_long_model(INFO)  # 100 million characters: 400 MB inflated


def test_the_issue_codes_bomb_is_refused_from_its_sizes(model_bomb):
    assert len(model_bomb) < 500 << 10  # ~390 KB on the wire
    for max_frames in (MAX_FRAMES, None):  # the server's bound, and none (a local file)
        result, peak = traced_peak(lambda m=max_frames: load_codes(model_bomb, max_frames=m))
        assert isinstance(result, TokgenError), result
        assert "declares 400000" in str(result), str(result)
        assert peak < 4 * MIB, f"refusing it allocated {peak / MIB:.0f} MiB"


def test_a_model_name_longer_than_the_bound_is_refused_by_its_dtype():
    """Inside the byte budget, but a name of 10,000 characters: refused by its item size
    before it is read (numpy strips the NULs: the name matches, the old loader took it)."""
    data = codes_with_long_model(INFO, 10_000)
    result, peak = traced_peak(lambda: load_codes(data, max_frames=MAX_FRAMES))
    assert isinstance(result, TokgenError) and f"at most {MAX_MODEL_CHARS} characters" in str(result)
    assert peak < 4 * MIB
    ok = load_codes(codes_with_long_model(INFO, MAX_MODEL_CHARS), max_frames=MAX_FRAMES)
    assert ok.model == INFO.codec


@pytest.mark.parametrize(
    "change, message",
    [
        ({"codes_0": np.array([{}, []], dtype=object)}, "holds object data"),
        ({"codes_0": np.zeros(4, np.float32)}, "must hold integers"),
        ({"codes_0": np.zeros(4, np.complex128)}, "must hold integers"),
        ({"codes_0": np.zeros(4, "i8,i8")}, "holds"),  # structured
        ({"codes_0": np.zeros(4, "(3,)i2")}, "must be 1-D"),  # a subarray dtype: numpy widens the shape
        ({"codes_0": np.zeros(4, "V8")}, "must hold integers"),
        ({"codes_0": np.zeros(4, bool)}, "must hold integers"),
        ({"sample_rate": np.asarray(16000.0)}, "must hold integers"),
        ({"num_samples": np.asarray("1024")}, "must hold integers"),
        ({"hops": np.asarray([b"ab", b"cd"])}, "must hold integers"),
        ({"model": np.asarray(b"tiny-test")}, "a name (text)"),
        ({"model": np.asarray(7)}, "a name (text)"),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}:{a.dtype}" for k, a in v.items()),
)
def test_entries_are_bounded_by_dtype_kind_and_item_size(change, message):
    with pytest.raises(TokgenError, match=re.escape(message)):
        load_codes(npz(good_codes(INFO) | change), max_frames=MAX_FRAMES)


def test_a_member_claiming_more_than_the_budget_is_refused_before_inflating():
    valid = stored_npz(good_codes(INFO))
    assert load_codes(valid, max_frames=MAX_FRAMES).model == INFO.codec
    for size in (0xFFFFFFF0, 64 * MIB):
        with pytest.raises(TokgenError, match="declares"):
            load_codes(zip_claiming(valid, "codes_0.npy", size), max_frames=MAX_FRAMES)
    with pytest.raises(TokgenError, match="declares"):  # no max_frames: MAX_CODES_BYTES
        load_codes(zip_claiming(valid, "codes_0.npy", 0xFFFFFFF0))
    with pytest.raises(TokgenError, match=r"truncated|Bad CRC"):  # claims less than it holds
        load_codes(zip_claiming(valid, "codes_0.npy", 100), max_frames=MAX_FRAMES)


def test_a_header_promising_more_than_its_member_holds_allocates_nothing():
    """codes_0's header says 10 million codes (inside a generous max_frames); its member
    holds 8 bytes of them. Refused before numpy allocates the 80 MB array."""
    arrays = good_codes(INFO)
    body = npy_with_header(np.zeros(4, np.int64), shape=(10_000_000,))
    data = stored_npz_raw({k: v for k, v in arrays.items() if k != "codes_0"}, {"codes_0.npy": body})
    result, peak = traced_peak(lambda: load_codes(data, max_frames=20_000_000))
    assert isinstance(result, TokgenError) and "truncated" in str(result), result
    assert peak < 4 * MIB


def test_a_negative_dimension_is_refused():
    """numpy's header parser takes a shape of (-1,); read as a count, -1 means "all of it"."""
    arrays = {k: v for k, v in good_codes(INFO).items() if k != "codes_0"}
    data = stored_npz_raw(arrays, {"codes_0.npy": npy_with_header(np.zeros(4, np.int16), shape=(-1,))})
    with pytest.raises(TokgenError, match="negative dimension"):
        load_codes(data, max_frames=MAX_FRAMES)


def npy_with_header(array: np.ndarray, shape: tuple[int, ...]) -> bytes:
    """``array``'s bytes behind a header that claims ``shape``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False, "shape": shape}
    )
    return buf.getvalue() + array.tobytes()


def stored_npz_raw(arrays: dict[str, np.ndarray], raw: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in arrays.items():
            out = io.BytesIO()
            np.save(out, value)
            zf.writestr(f"{key}.npy", out.getvalue())
        for name, body in raw.items():
            zf.writestr(name, body)
    return buf.getvalue()


def test_the_number_of_members_and_the_directory_are_bounded():
    arrays = good_codes(INFO)
    assert load_codes(stored_npz(arrays, extra=MAX_ENTRIES - len(arrays))).model == INFO.codec
    for extra in (MAX_ENTRIES - len(arrays) + 1, 5000):
        with pytest.raises(TokgenError, match="entries"):
            load_codes(stored_npz(arrays, extra=extra), max_frames=MAX_FRAMES)
    # too many levels: each a real codes_<i>, over MAX_LEVELS
    many = {f"codes_{i}": np.zeros(2, np.int16) for i in range(17)} | {"hops": np.ones(17, np.int64)}
    with pytest.raises(TokgenError, match="at most 16"):
        load_codes(npz(arrays | many))


def test_valid_codes_files_still_load_exactly():
    """The bounds refuse nothing a codes file holds: every layout numpy writes (deflated,
    stored, Fortran order, big-endian, int8..uint64) loads to the same codes."""
    codes = [np.arange(40) % 64, np.arange(160) % 64]
    base = good_codes(INFO) | {f"codes_{i}": c.astype(np.int16) for i, c in enumerate(codes)}
    variants = {
        "deflated": npz(base, compressed=True),
        "stored": npz(base),
        "zipfile-stored": stored_npz(base),
        "big-endian": npz(base | {f"codes_{i}": c.astype(">u2") for i, c in enumerate(codes)}),
        "fortran": npz(base | {"codes_1": np.asfortranarray(codes[1].astype(np.int8))}),
        "uint64": npz(
            base | {"codes_0": codes[0].astype(np.uint64), "sample_rate": np.asarray(SR, np.int32)}
        ),
    }
    for name, data in variants.items():
        loaded = load_codes(data, max_frames=MAX_FRAMES)
        assert [c.tolist() for c in loaded.codes] == [c.tolist() for c in codes], name
        assert (loaded.sample_rate, loaded.hops, loaded.model) == (SR, [256, 64], INFO.codec), name
        assert all(c.dtype == np.int64 for c in loaded.codes)


def test_a_timbre_reference_is_bounded_and_typed_before_it_is_read():
    """The optional ``reference`` clip: 16-bit PCM, at most MAX_REFERENCE_SAMPLES, refused
    from its header otherwise (a claimed 100 M samples costs nothing)."""
    base = good_codes(INFO)
    clip = (np.sin(np.arange(4000) / 9) * 20000).astype(np.int16)
    loaded = load_codes(npz(base | {"reference": clip}), max_frames=MAX_FRAMES)
    assert loaded.reference is not None and np.allclose(loaded.reference * 32767, clip)
    assert load_codes(npz(base), max_frames=MAX_FRAMES).reference is None
    with pytest.raises(TokgenError, match="reference must hold integers"):
        load_codes(npz(base | {"reference": clip.astype(np.float32)}), max_frames=MAX_FRAMES)
    too_long = np.zeros(MAX_REFERENCE_SAMPLES + 1, np.int16)
    with pytest.raises(TokgenError, match="timbre reference holds"):
        load_codes(npz(base | {"reference": too_long}, compressed=True))
    data = zip_claiming(stored_npz(base | {"reference": clip}), "reference.npy", 100_000_000)
    result, peak = traced_peak(lambda: load_codes(data, max_frames=MAX_FRAMES))
    assert isinstance(result, TokgenError) and peak < 4 * MIB


def test_a_local_codes_file_is_bounded_too(tmp_path, model_bomb):
    (tmp_path / "bomb.npz").write_bytes(model_bomb)
    result, peak = traced_peak(lambda: load_codes(tmp_path / "bomb.npz"))
    assert isinstance(result, TokgenError) and str(tmp_path / "bomb.npz") in str(result)
    assert peak < 4 * MIB


# ---- 2. audio --------------------------------------------------------------------------------


def test_the_issue_flac_bomb_is_refused_from_its_header():
    """82 KiB: 15 s at 655,350 Hz x 8 channels, 300 MiB once decoded."""
    bomb = constant_flac(655_350, 8, 15.0)
    assert len(bomb) < 100 << 10
    result, peak = traced_peak(lambda: load_audio(bomb, SR, max_seconds=60.0))
    assert isinstance(result, AudioError) and f"at most {MAX_SAMPLE_RATE} Hz" in str(result), result
    assert peak < 2 * MIB, f"refusing it allocated {peak / MIB:.0f} MiB"


@pytest.mark.parametrize(
    "audio, refused",
    [
        (lambda: wav_header(MAX_SAMPLE_RATE, frames=3840), None),
        (lambda: wav_header(MAX_SAMPLE_RATE + 1, frames=3840), "sample rate"),
        (lambda: wav_header(2**31 - 1, frames=3840), "sample rate"),
        (lambda: encoded(tone(channels=MAX_CHANNELS)), None),
        (lambda: encoded(tone(channels=MAX_CHANNELS + 1)), "channels"),
        (lambda: encoded(tone(channels=64)), "channels"),
        (lambda: constant_flac(655_350, 1, 0.01), "sample rate"),
    ],
    ids=["384k", "384001", "2^31-1", "8-ch", "9-ch", "64-ch", "flac-655k"],
)
def test_rate_and_channels_are_bounded(audio, refused):
    if refused is None:
        assert load_audio(audio(), SR).size > 0
    else:
        with pytest.raises(AudioError, match=refused):
            load_audio(audio(), SR)


def test_decoded_bytes_are_bounded_by_the_header_before_decoding():
    """10 ms of FLAC whose header claims 59 s at 384 kHz x 8 channels (725 MB decoded):
    inside the 60 s a prime may last, over MAX_DECODED_BYTES. The old loader asked
    soundfile for the claimed frames: a 725 MB array before the first sample."""
    liar = flac_claiming(384_000, 8, 59.0)
    result, peak = traced_peak(lambda: load_audio(liar, SR, max_seconds=60.0))
    assert isinstance(result, AudioError) and "decodes to 691 MiB" in str(result), result
    assert f"{MAX_DECODED_BYTES / MIB:g} MiB" in str(result)
    assert peak < 2 * MIB
    small = encoded(tone(1600))
    with pytest.raises(AudioError, match=r"audio decodes to .* the limit is"):
        load_audio(small, SR, max_decoded_bytes=1 << 12)
    assert load_audio(small, SR, max_decoded_bytes=None).size == 1600


def test_an_accepted_file_decodes_a_block_at_a_time():
    """The largest a file within the bounds can be, 15 s at 384 kHz x 8 channels (184 MB
    decoded), holds its output at the target rate and a block, not the decoded file."""
    big = constant_flac(384_000, 8, 15.0)
    result, peak = traced_peak(lambda: load_audio(big, SR, max_seconds=60.0))
    assert isinstance(result, np.ndarray) and result.size == 15 * SR
    assert np.allclose(result[SR:-SR], 0.25, atol=1e-3)
    assert peak < 8 * MIB, f"decoding it allocated {peak / MIB:.0f} MiB"


def test_a_header_that_understates_the_length_decodes_only_what_it_claims():
    flac = with_total_frames(constant_flac(SR, 1, 2.0), SR // 2)
    assert load_audio(flac, SR).size == SR // 2


@pytest.mark.parametrize(
    "rate, channels, frames", [(48000, 2, 300_001), (44100, 1, 100_000), (16000, 3, 70_000), (22050, 2, 5)]
)
def test_the_block_decode_equals_decoding_the_whole_file(rate, channels, frames):
    """Mixing and resampling a block at a time changes no sample (soxr's stream is exact)."""
    audio = (np.random.default_rng(rate).standard_normal((frames, channels)) * 0.1).astype(np.float32)
    data = encoded(audio, rate, fmt="FLAC", subtype="PCM_24")
    whole, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    expected = resample(whole.mean(axis=1), rate, SR)
    assert np.array_equal(load_audio(data, SR), expected)


# The property: whatever a FLAC's header claims, reading it costs a bounded amount of memory
# beyond its output (which max_seconds bounds), and it is decoded or refused, never more.
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.sampled_from([1, 8000, 48000, 192_000, 384_000, 400_000, 655_350]),
    channels=st.integers(1, 8),
    claimed=st.sampled_from([0.0, 0.005, 1.0, 30.0, 59.9, 61.0, 3600.0, 1e6]),
)
def test_what_a_flac_claims_costs_at_most_its_output(rate, channels, claimed):
    data = flac_claiming(rate, channels, claimed, real_seconds=0.005)
    result, peak = traced_peak(lambda: load_audio(data, SR, max_seconds=60.0, allow_silent=True))
    assert isinstance(result, (np.ndarray, AudioError)), result
    if isinstance(result, np.ndarray):
        assert rate <= MAX_SAMPLE_RATE and claimed <= 60
    assert peak < 4 * MIB, f"{rate} Hz x {channels} claiming {claimed} s: {peak / MIB:.0f} MiB"


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    chars=st.sampled_from([1, 255, 256, 257, 4096, 1_000_000, 100_000_000]),
    claimed=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    extra=st.integers(0, 40),
)
def test_what_a_codes_file_claims_costs_a_bounded_amount(chars, claimed, extra):
    if claimed is None:
        data = codes_with_long_model(INFO, max(chars, len(INFO.codec)))
    else:
        data = zip_claiming(stored_npz(good_codes(INFO), extra=extra), "codes_0.npy", claimed)
    result, peak = traced_peak(lambda: load_codes(data, max_frames=MAX_FRAMES))
    assert peak < 4 * MIB, f"{chars} chars / claimed {claimed}: {peak / MIB:.0f} MiB"
    if not isinstance(result, TokgenError):
        assert result.model == INFO.codec  # type: ignore[attr-defined]


# ---- 7. WAVE_FORMAT_EXTENSIBLE -----------------------------------------------------------------


@pytest.mark.parametrize(
    "channels, subtype", [(2, "PCM_24"), (6, "PCM_16"), (1, "PCM_32"), (2, "FLOAT"), (4, "PCM_24")]
)
def test_wave_format_extensible_is_read(tmp_path, channels, subtype):
    audio = tone(3200, channels)
    data = encoded(audio, 48000, fmt="WAVEX", subtype=subtype)
    assert sf.info(io.BytesIO(data)).format == "WAVEX"
    out = load_audio(data, SR)
    mono = audio if channels == 1 else audio.mean(axis=1)
    assert np.allclose(out, resample(mono, 48000, SR), atol=1e-3)
    (tmp_path / "x.wav").write_bytes(data)  # from a path, too
    assert load_audio(tmp_path / "x.wav", SR).size == out.size


# ---- 6. the Redis password -----------------------------------------------------------------


@pytest.mark.parametrize(
    "url, shown",
    [
        ("redis://:s3cret@db:6379/0", "redis://:***@db:6379/0"),
        ("redis://app:s3cret@db:6379/0", "redis://app:***@db:6379/0"),
        ("rediss://s3cret@db", "rediss://***@db"),  # userinfo alone may be the password
        ("unix://:s3cret@/run/redis.sock?db=1", "unix://:***@/run/redis.sock?db=1"),
        ("unix:///run/redis.sock?db=0&password=s3cret", "unix:///run/redis.sock?db=0&password=***"),
        ("redis://app:p%40ss@[::1]:6379/1?password=s3cret#x", "redis://app:***@[::1]:6379/1?password=***#x"),
        ("redis://a:s3cret@host@db:1/", "redis://a:***@db:1/"),  # an unescaped @ in the password
        ("redis://a:s3cret@[::1", "redis://***@[::1"),  # not a valid URL: still no password
        ("redis://db:6379", "redis://db:6379"),  # nothing to hide: unchanged
        ("unix:///tmp/tokgen/redis.sock", "unix:///tmp/tokgen/redis.sock"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


@pytest.fixture
def password_redis(tmp_path):
    """A redis-server that requires a password, on a unix socket."""
    sock = tmp_path / "r.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock), "--requirepass", "s3cret", "--save", ""],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sock.exists(), "redis-server did not start"
        yield f"unix://:s3cret@{sock}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_does_not_print_the_redis_password(tmp_path, password_redis):
    """``tokgen serve`` prints its startup JSON before it loads models: the models here do
    not exist, so it prints, then exits 2."""
    cmd = [sys.executable, "-m", "tokgen", "serve", "--port", "0", "--metrics-port", "0", "--no-worker"]
    cmd += ["--redis-url", password_redis, "--codec", str(tmp_path / "none"), "--priors", str(tmp_path)]
    env = {**os.environ, "TOKGEN_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    where = json.loads(done.stdout.splitlines()[0])
    assert where["redis"] == password_redis.replace("s3cret", "***")
    assert "s3cret" not in done.stdout + done.stderr


def test_worker_does_not_print_the_redis_password(tmp_path, password_redis, tiny_model_dir, prior_set):
    cmd = [sys.executable, "-m", "tokgen", "worker", "--redis-url", password_redis, "--metrics-port", "0"]
    cmd += ["--codec", str(tiny_model_dir), "--priors", str(prior_set), "--backend", "hf"]
    env = {**os.environ, "TOKGEN_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    where = json.loads(line)
    assert where["redis"] == password_redis.replace("s3cret", "***")
    assert "s3cret" not in line + out + err


def test_a_wrong_password_is_reported_without_it(tmp_path, password_redis):
    import asyncio

    from tokgen.jobs.queue import check_redis

    wrong = password_redis.replace("s3cret", "wr0ng") + "?password=wr0ng"
    with pytest.raises(TokgenError) as err:
        asyncio.run(check_redis(wrong))
    assert "wr0ng" not in str(err.value) and "***" in str(err.value)


# ---- 9. object reprs in messages; checkpoints that run code ------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: load_audio(b"garbage", SR),
        lambda: load_audio(b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 40, SR),
        lambda: load_audio(wav_header(0), SR),
        lambda: load_codes(b"\x01\x02garbage"),
        lambda: load_codes(b"PK\x03\x04" + b"\0" * 100),
        lambda: load_codes(np.zeros(3).tobytes()),
    ],
)
def test_errors_name_the_upload_not_an_object(call):
    with pytest.raises(TokgenError) as err:
        call()
    message = str(err.value)
    assert " at 0x" not in message and "<_io" not in message and "object" not in message, message


class _RunsCode:
    """Unpickling this touches a file: what a hostile checkpoint could do instead."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def test_a_training_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "ran"
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    torch.save({"model": model.state_dict(), "evil": _RunsCode(marker)}, tmp_path / "state.pt")
    with pytest.raises(CheckpointError, match="cannot read training checkpoint"):
        load_checkpoint(tmp_path / "state.pt", model, opt, np.random.default_rng(0))
    assert not marker.exists(), "loading the checkpoint ran code"
