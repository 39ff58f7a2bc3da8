"""Malformed and odd requests for ``tests/test_fuzz.py``: payload builders (WAV headers with
absurd fields, truncated and mislabelled files, codes files that are not quite codes files,
bytes that are not protobuf) and the corpus of cases, each with the status it must get and why.

A case's payload is built from the served model's ``GetModelInfoResponse`` (codes files
name the codec), so the corpus itself is importable at collection time (the ids)."""

from __future__ import annotations

import base64
import functools
import io
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import soundfile as sf

from tokgen.jobs.queue import Cursor
from tokgen.jobs.states import JobState
from tokgen.serve.jobs_service import page_token
from tokgen.v1 import jobs_pb2 as jpb
from tokgen.v1 import tokgen_pb2 as pb

TOKGEN = "/tokgen.v1.TokgenService/"
JOBS = "/tokgen.v1.JobService/"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
STREAMING = {TOKGEN + "Continue", JOBS + "WatchJob", REFLECTION}
MAX_REQUEST_BYTES = 1 << 20  # the fuzzed server runs with --max-request-bytes 1048576
SR = 16000  # the tiny codec's rate


# ---- audio --------------------------------------------------------------------------------


def tone(frames: int = 1600, channels: int = 1) -> np.ndarray:
    t = np.arange(frames) / SR
    mono = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return mono if channels == 1 else np.tile(mono[:, None], (1, channels))


def encoded(audio: np.ndarray, rate: int = SR, fmt: str = "WAV", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def wav_header(
    rate: int,
    channels: int = 1,
    bits: int = 16,
    frames: int = 100,
    fmt_tag: int = 1,
    data_size: int | None = None,
    riff_size: int | None = None,
    data: bytes | None = None,
) -> bytes:
    """A WAV file written by hand, so every header field can lie (rate, channels, sizes)."""
    block = max(1, channels * bits // 8)
    if data is None and bits == 16:
        data = (np.sin(np.arange(frames * max(channels, 1)) * 0.3) * 8000).astype("<i2").tobytes()
    elif data is None:  # any bytes: a waveform of some kind in every sample format
        data = (np.arange(frames * block) * 37 % 251).astype(np.uint8).tobytes()
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    size = len(data) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size) + data
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def flac_of_unknown_length(seconds: float = 2.0) -> bytes:
    """A valid FLAC whose STREAMINFO says 0 total samples ("unknown"): libsndfile then reports
    INT64_MAX frames instead of reading to the end."""
    data = bytearray(encoded(np.full(int(SR * seconds), 0.25, np.float32), fmt="FLAC"))
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)  # the low 36 bits: total samples
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def with_total_frames(flac: bytes, frames: int) -> bytes:
    """``flac`` with STREAMINFO's total samples (36 bits) set to ``frames``: a header that
    claims a length its data does not have."""
    data = bytearray(flac)
    packed = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1)
    data[18:26] = (packed | frames).to_bytes(8, "big")
    return bytes(data)


def constant_flac(rate: int, channels: int, seconds: float, value: float = 0.25) -> bytes:
    """A real FLAC of a constant (non-silent) signal, written a block at a time: FLAC's
    constant subframes make it a few bytes per block, however many frames it decodes to
    (issue 17's bomb: 15 s at 655,350 Hz x 8 channels is 82 KiB, 300 MiB decoded)."""
    block = np.full((1 << 16, channels), value, np.float32)
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", rate, channels, subtype="PCM_16", format="FLAC") as f:
        left = round(rate * seconds)
        while left:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))
    return buf.getvalue()


def flac_claiming(rate: int, channels: int, claimed_seconds: float, real_seconds: float = 0.01) -> bytes:
    """A FLAC of ``real_seconds`` whose header claims ``claimed_seconds``."""
    return with_total_frames(constant_flac(rate, channels, real_seconds), round(rate * claimed_seconds))


# ---- codes files --------------------------------------------------------------------------


def npz(arrays: dict[str, np.ndarray] | None = None, compressed: bool = False, **more: np.ndarray) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **(arrays or {}), **more)  # type: ignore[arg-type]
    return buf.getvalue()


def good_codes(info: pb.GetModelInfoResponse, top_frames: int = 10) -> dict[str, np.ndarray]:
    """The arrays of a codes file that matches the served codec (all codes 0)."""
    hops = [lv.hop for lv in info.levels]
    arrays = {f"codes_{i}": np.zeros(top_frames * hops[0] // hop, np.int16) for i, hop in enumerate(hops)}
    arrays |= {
        "sample_rate": np.asarray(info.sample_rate, np.int64),
        "hops": np.asarray(hops, np.int64),
        "num_samples": np.asarray(top_frames * hops[0], np.int64),
        "model": np.asarray(info.codec),
    }
    return arrays


def codes_file(info: pb.GetModelInfoResponse, **changes: np.ndarray) -> bytes:
    return npz(good_codes(info) | changes)


def streamed_npz(arrays: dict[str, np.ndarray], big: str, descr: str, head: bytes) -> bytes:
    """A deflated .npz of ``arrays`` plus a 0-d entry ``big`` of dtype ``descr`` (e.g.
    '<U100000000'): ``head``, then zeros up to its item size, written a block at a time, so
    building a file that inflates to gigabytes stays small."""
    itemsize = np.dtype(descr).itemsize
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key, value in arrays.items():
            with zf.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, value)
        with zf.open(f"{big}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {"descr": descr, "fortran_order": False, "shape": ()})
            f.write(head)
            left, zeros = itemsize - len(head), bytes(1 << 22)
            while left:
                f.write(zeros[: min(left, len(zeros))])
                left -= min(left, len(zeros))
    return buf.getvalue()


@functools.cache
def _model_bomb(codec: str, arrays: tuple[tuple[str, bytes], ...], chars: int) -> bytes:
    head = np.asarray(codec, dtype=f"<U{len(codec)}").tobytes()
    return streamed_npz({k: np.load(io.BytesIO(v)) for k, v in arrays}, "model", f"<U{chars}", head)


def codes_with_long_model(info: pb.GetModelInfoResponse, chars: int = 100_000_000) -> bytes:
    """Issue 17's codes bomb: a codes file that matches ``info``'s codec, whose 0-d ``model``
    is declared as ``chars`` characters (the codec's name, then NULs: numpy strips those,
    so the name still matches). 100 million: 400 MB inflated, ~390 KB on the wire."""
    arrays = {k: v for k, v in good_codes(info).items() if k != "model"}
    return _model_bomb(info.codec, tuple((k, npy(v)) for k, v in arrays.items()), chars)


def zip_claiming(data: bytes, name: str, size: int) -> bytes:
    """``data`` (a zip without zip64 extras) whose central directory says member ``name``
    inflates to ``size`` bytes."""
    out = bytearray(data)
    at = out.find(b"PK\x01\x02")
    while at >= 0:
        length = int.from_bytes(out[at + 28 : at + 30], "little")
        if out[at + 46 : at + 46 + length] == name.encode():
            out[at + 24 : at + 28] = size.to_bytes(4, "little")
            return bytes(out)
        at = out.find(b"PK\x01\x02", at + 46)
    raise KeyError(name)


def stored_npz(arrays: dict[str, np.ndarray], extra: int = 0) -> bytes:
    """An uncompressed .npz written by ``zipfile`` (no zip64 extras), with ``extra`` more
    empty members."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in arrays.items():
            zf.writestr(f"{key}.npy", npy(value))
        for i in range(extra):
            zf.writestr(f"x{i}", b"")
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


# ---- the corpus ---------------------------------------------------------------------------

Info = pb.GetModelInfoResponse
Build = Callable[[Info], bytes]


@dataclass(frozen=True)
class Case:
    """``payload(info)`` (a serialized request, or any bytes) sent to ``method``: the call
    must end with ``expected`` (for a streaming method: its first reply, or the error), and
    an INVALID_ARGUMENT with a BadRequest detail must name ``field`` (when given)."""

    id: str
    method: str
    payload: Build
    expected: str
    field: str | None = None
    metadata: tuple[tuple[str, str | bytes], ...] = ()


def cont(**fields) -> Build:
    """A ContinueRequest; callables among ``fields`` are built from the model info."""
    return lambda info: pb.ContinueRequest(
        **{k: v(info) if callable(v) else v for k, v in fields.items()}
    ).SerializeToString()


def primed(audio: bytes) -> Build:
    return cont(prime_audio=audio, seconds=0.1)


def raw(data: bytes) -> Build:
    return lambda info: data


def submit(key: str = "", **fields) -> Build:
    def build(info: Info) -> bytes:
        request = pb.ContinueRequest.FromString(cont(**fields)(info))
        return jpb.SubmitJobRequest(request=request, idempotency_key=key).SerializeToString()

    return build


ANCESTRAL = {"mode": pb.MODE_ANCESTRAL, "seconds": 0.1}
NOT_PROTOBUF = {
    "not-protobuf": b"\xff\xff\xff\xff not a protobuf",
    "truncated-varint": b"\x08\xff",  # field 1, varint, never finished
    "length-past-the-end": b"\x0a\xff\xff\xff\xff\x0f",  # field 1, 4 GiB long, 0 bytes follow
    "start-group": b"\x0b",  # a group that never ends
    "field-number-0": b"\x00",  # a zero tag (upb takes b"\x00\x01" as a fieldless message!)
}
JOB_METHODS = ("SubmitJob", "GetJob", "WatchJob", "CancelJob", "ListJobs", "GetJobResult", "StreamJobResult")
METHODS = [TOKGEN + "GetModelInfo", TOKGEN + "Continue", *(JOBS + m for m in JOB_METHODS)]
# An empty message is a valid message: every field at its default.
EMPTY = {
    TOKGEN + "GetModelInfo": ("OK", None),
    TOKGEN + "Continue": ("INVALID_ARGUMENT", "prime_audio"),  # mode unspecified = primed
    JOBS + "SubmitJob": ("INVALID_ARGUMENT", "request.prime_audio"),
    JOBS + "GetJob": ("INVALID_ARGUMENT", "job_id"),  # required
    JOBS + "CancelJob": ("INVALID_ARGUMENT", "job_id"),
    JOBS + "GetJobResult": ("INVALID_ARGUMENT", "job_id"),
    JOBS + "WatchJob": ("INVALID_ARGUMENT", "job_id"),
    JOBS + "StreamJobResult": ("INVALID_ARGUMENT", "job_id"),
    JOBS + "ListJobs": ("OK", None),  # the first page of all jobs
}
# Invalid UTF-8 in a proto3 string field: the parser refuses it (DecodeError).
BAD_UTF8 = b"\x02\xc3\x28"
STRING_FIELDS = {
    JOBS + "GetJob": b"\x0a",
    JOBS + "CancelJob": b"\x0a",
    JOBS + "GetJobResult": b"\x0a",
    JOBS + "WatchJob": b"\x0a",
    JOBS + "StreamJobResult": b"\x0a",
    JOBS + "SubmitJob": b"\x12",  # idempotency_key
    JOBS + "ListJobs": b"\x1a",  # page_token
}


def sized_prime(size: int) -> bytes:
    """A primed ContinueRequest of exactly ``size`` bytes (zeros as the prime)."""
    base = len(pb.ContinueRequest(prime_audio=b"", seconds=0.1).SerializeToString())
    n = size - (base - 1) - 3  # the empty prime's 1-byte length becomes 3 bytes at ~1 MB
    data = pb.ContinueRequest(prime_audio=b"\0" * n, seconds=0.1).SerializeToString()
    assert len(data) == size
    return data


def with_sampling(sampling: bytes) -> bytes:
    """An ancestral 0.1 s request whose sampling field is these raw bytes (merged in)."""
    head = pb.ContinueRequest(mode=pb.MODE_ANCESTRAL, seconds=0.1).SerializeToString()
    return head + b"\x22" + bytes([len(sampling)]) + sampling


def _short(method: str) -> str:
    return method.rsplit("/", 1)[-1]


def corpus() -> list[Case]:
    cases: list[Case] = []
    # -- bytes that are not the method's request: the server's guard answers INVALID_ARGUMENT
    # (grpc itself would say UNKNOWN); unknown methods are UNIMPLEMENTED (grpc core).
    for method in METHODS:
        for name, data in NOT_PROTOBUF.items():
            cases.append(Case(f"{_short(method)}-{name}", method, raw(data), "INVALID_ARGUMENT"))
        code, field = EMPTY[method]
        cases.append(Case(f"{_short(method)}-empty-bytes", method, raw(b""), code, field))
        if method in STRING_FIELDS:
            data = STRING_FIELDS[method] + BAD_UTF8
            cases.append(Case(f"{_short(method)}-invalid-utf8-string", method, raw(data), "INVALID_ARGUMENT"))
    for method in (TOKGEN + "Nope", JOBS + "Nope", "/nope.v1.Nope/Continue", "/"):
        cases.append(Case(f"unknown-method-{method}", method, raw(b""), "UNIMPLEMENTED"))

    # -- prime audio (Continue, primed, 0.1 s): unreadable, empty, silent, too short, too
    # long, NaN -> INVALID_ARGUMENT naming prime_audio; odd but readable -> streams (OK).
    valid = encoded(tone())
    audio = {
        "wav-cut-at-10-bytes": (valid[:10], "INVALID_ARGUMENT"),  # not even a RIFF header
        "wav-cut-at-44-bytes": (valid[:44], "INVALID_ARGUMENT"),  # header only: 0 samples
        "wav-cut-at-100-bytes": (valid[:100], "OK"),  # 28 samples survive: >= one top frame (16)
        "wav-data-size-4GiB": (wav_header(SR, data_size=0xFFFFFFF0), "OK"),  # libsndfile clamps
        "wav-riff-size-4GiB": (wav_header(SR, riff_size=0xFFFFFFF0), "OK"),
        "flac-magic-then-garbage": (b"fLaC" + b"\0" * 200, "INVALID_ARGUMENT"),
        "ogg-magic-then-garbage": (b"OggS" + bytes(range(256)), "INVALID_ARGUMENT"),
        "id3-mp3-frames": (b"ID3\x03\0\0\0\0\0\0" + b"\xff\xfb" * 500, "INVALID_ARGUMENT"),
        "flac-of-unknown-length": (flac_of_unknown_length(), "INVALID_ARGUMENT"),  # INT64_MAX frames
        "wav-silence": (encoded(np.zeros(1600, np.float32)), "INVALID_ARGUMENT"),
        "wav-1-sample": (encoded(np.array([0.5], np.float32)), "INVALID_ARGUMENT"),  # < one frame
        "wav-1-hz-10-frames": (wav_header(1, frames=10), "OK"),  # 10 s, resampled to 16 kHz
        "wav-1-hz-61-frames": (wav_header(1, frames=61), "INVALID_ARGUMENT"),  # 61 s > 60 s prime
        # rates and channels are bounded before decoding (issue 17): 384 kHz, 8 channels
        "wav-1-mhz": (wav_header(1_000_000, frames=20000), "INVALID_ARGUMENT"),
        "wav-384-khz": (wav_header(384_000, frames=7680), "OK"),  # 20 ms -> 320 samples
        "wav-384001-hz": (wav_header(384_001, frames=7680), "INVALID_ARGUMENT"),
        "flac-655-khz-8-channels": (constant_flac(655_350, 8, 0.1), "INVALID_ARGUMENT"),
        "wav-9-channels": (encoded(tone(channels=9)), "INVALID_ARGUMENT"),
        # decodes to 725 MB by its header (at most 256 MiB), though its data is 10 ms
        "flac-claims-59-s-at-384-khz-8-channels": (flac_claiming(384_000, 8, 59.0), "INVALID_ARGUMENT"),
        # truncated: libsndfile fails past the end of its data (psf_fseek), as it always did
        "flac-claims-59-s-at-16-khz": (flac_claiming(SR, 1, 59.0), "INVALID_ARGUMENT"),
        # WAVE_FORMAT_EXTENSIBLE: what common tools write for 24-bit and multichannel WAV
        "wavex-24-bit-stereo": (encoded(tone(channels=2), fmt="WAVEX", subtype="PCM_24"), "OK"),
        "wavex-float-6-channels": (encoded(tone(channels=6), fmt="WAVEX", subtype="FLOAT"), "OK"),
        "wav-0-hz": (wav_header(0), "INVALID_ARGUMENT"),
        "wav-4ghz": (wav_header(0xFFFFFFFF), "INVALID_ARGUMENT"),
        "wav-8-channels": (encoded(tone(channels=8)), "OK"),  # mixed down
        "wav-0-channels": (wav_header(SR, channels=0), "INVALID_ARGUMENT"),
        "wav-1000-channels-10-frames": (wav_header(SR, channels=1000, frames=10), "INVALID_ARGUMENT"),
        "wav-7-bit": (wav_header(SR, bits=7), "OK"),  # an odd sample width libsndfile still reads
        "wav-mp3-format-tag": (wav_header(SR, fmt_tag=0x55), "INVALID_ARGUMENT"),
        "wav-adpcm-format-tag-no-extension": (wav_header(SR, fmt_tag=2), "INVALID_ARGUMENT"),
        "wav-float-nan": (encoded(np.full(1600, np.nan, np.float32), subtype="FLOAT"), "INVALID_ARGUMENT"),
        "wav-float-inf": (encoded(np.full(1600, np.inf, np.float32), subtype="FLOAT"), "INVALID_ARGUMENT"),
        "wav-float-1e30": (encoded(np.full(1600, 1e30, np.float32), subtype="FLOAT"), "OK"),
        "wav-61-s-at-2-khz": (encoded(np.full(2000 * 61, 0.1, np.float32), 2000), "INVALID_ARGUMENT"),
        "aiff-unsupported": (encoded(tone(), fmt="AIFF"), "INVALID_ARGUMENT"),
        "flac-valid": (encoded(tone(), fmt="FLAC"), "OK"),
        "ogg-vorbis-valid": (encoded(tone(), fmt="OGG"), "OK"),
        "garbage-1MB": (np.random.default_rng(0).bytes(1_000_000), "INVALID_ARGUMENT"),
    }
    for name, (data, code) in audio.items():
        field = "prime_audio" if code == "INVALID_ARGUMENT" else None
        cases.append(Case(f"prime-{name}", TOKGEN + "Continue", primed(data), code, field))

    # -- the wrong source for the mode, and codes files that are not codes files
    cont_codes = lambda build: cont(mode=pb.MODE_CONTINUE, seconds=0.1, codes=build)  # noqa: E731
    cases += [
        Case(
            "ancestral-with-prime",
            TOKGEN + "Continue",
            cont(**ANCESTRAL, prime_audio=valid),
            "INVALID_ARGUMENT",
            "prime_audio",
        ),
        Case(
            "primed-with-codes",
            TOKGEN + "Continue",
            cont(seconds=0.1, codes=b"x"),
            "INVALID_ARGUMENT",
            "prime_audio",
        ),
        Case(
            "upsample-with-prime",
            TOKGEN + "Continue",
            cont(mode=pb.MODE_UPSAMPLE, prime_audio=valid),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-random-bytes",
            TOKGEN + "Continue",
            cont_codes(b"\x01\x02garbage"),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-zip-magic-garbage",
            TOKGEN + "Continue",
            cont_codes(b"PK\x03\x04" + b"\0" * 100),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-npz-without-codes",
            TOKGEN + "Continue",
            cont_codes(lambda i: npz(x=np.zeros(3))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-other-codec",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_file(i, model=np.asarray("someone-else"))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-out-of-codebook",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_file(i, codes_0=np.full(10, 9999, np.int16))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-negative",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_file(i, codes_0=np.full(10, -1, np.int16))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-three-levels",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_file(i, codes_2=np.zeros(3, np.int16))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-empty-top-level",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_file(i, codes_0=np.zeros(0, np.int16))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-pickled-object-array",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_file(i, codes_0=np.array([{}, []], dtype=object))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        # issue 17: bounded by dtype, item size and inflated bytes before anything is read
        Case(
            "codes-model-of-100M-characters",
            TOKGEN + "Continue",
            cont_codes(codes_with_long_model),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-model-of-257-characters",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_with_long_model(i, 257)),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-member-claims-4GiB",
            TOKGEN + "Continue",
            cont_codes(lambda i: zip_claiming(stored_npz(good_codes(i)), "codes_0.npy", 0xFFFFFFF0)),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-with-40-more-entries",
            TOKGEN + "Continue",
            cont_codes(lambda i: stored_npz(good_codes(i), extra=40)),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-with-5000-more-entries",
            TOKGEN + "Continue",
            cont_codes(lambda i: stored_npz(good_codes(i), extra=5000)),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-float-sample-rate",
            TOKGEN + "Continue",
            cont_codes(lambda i: codes_file(i, sample_rate=np.asarray(i.sample_rate, np.float64))),
            "INVALID_ARGUMENT",
            "codes",
        ),
        Case(
            "codes-valid-stored", TOKGEN + "Continue", cont_codes(lambda i: stored_npz(good_codes(i))), "OK"
        ),
        Case("codes-valid-continue", TOKGEN + "Continue", cont_codes(codes_file), "OK"),
        Case(
            "codes-valid-upsample", TOKGEN + "Continue", cont(mode=pb.MODE_UPSAMPLE, codes=codes_file), "OK"
        ),
    ]

    # -- over the size limit (grpc core, before any handler): RESOURCE_EXHAUSTED
    big = b"\0" * (MAX_REQUEST_BYTES + 1)
    cases += [
        Case("oversize-continue", TOKGEN + "Continue", primed(big), "RESOURCE_EXHAUSTED"),
        Case(
            "oversize-submit", JOBS + "SubmitJob", submit(prime_audio=big, seconds=0.1), "RESOURCE_EXHAUSTED"
        ),
        Case(
            "oversize-job-id",
            JOBS + "GetJob",
            raw(jpb.GetJobRequest(job_id="a" * (MAX_REQUEST_BYTES + 1)).SerializeToString()),
            "RESOURCE_EXHAUSTED",
        ),
        # the boundary: a request of exactly max_request_bytes gets in (and is garbage audio)
        Case(
            "request-of-exactly-max-bytes",
            TOKGEN + "Continue",
            raw(sized_prime(MAX_REQUEST_BYTES)),
            "INVALID_ARGUMENT",
            "prime_audio",
        ),
        Case(
            "request-one-byte-over-max",
            TOKGEN + "Continue",
            raw(sized_prime(MAX_REQUEST_BYTES + 1)),
            "RESOURCE_EXHAUSTED",
        ),
    ]

    # -- varints the Python API cannot write: a negative top_k or seed (uint32/uint64 on the
    # wire: they arrive as 2**32-1 and 2**64-1) and a negative mode (int32 enum: -1)
    minus_one = b"\xff" * 9 + b"\x01"
    cases += [
        Case(
            "top-k-negative-varint",
            TOKGEN + "Continue",
            raw(with_sampling(b"\x10" + minus_one)),
            "INVALID_ARGUMENT",
            "sampling.top_k",
        ),
        Case(
            "seed-negative-varint",
            TOKGEN + "Continue",
            raw(with_sampling(b"\x20" + minus_one)),
            "INVALID_ARGUMENT",
            "sampling.seed",
        ),
        Case(
            "mode-negative-varint",
            TOKGEN + "Continue",
            raw(pb.ContinueRequest(seconds=0.1).SerializeToString() + b"\x28" + minus_one),
            "INVALID_ARGUMENT",
            "mode",
        ),
    ]

    # -- metadata: from 16 KiB (grpc's hard limit) the server's transport refuses the call
    # (RESOURCE_EXHAUSTED; 8-16 KiB: some calls, at random); -bin values may hold any bytes.
    info = TOKGEN + "GetModelInfo"
    cases += [
        Case(
            "metadata-1MB-value",
            info,
            raw(b""),
            "RESOURCE_EXHAUSTED",
            metadata=(("x-junk", "a" * (1 << 20)),),
        ),
        Case(
            "metadata-16KiB-value",
            info,
            raw(b""),
            "RESOURCE_EXHAUSTED",
            metadata=(("x-junk", "a" * (16 << 10)),),
        ),
        Case(
            "metadata-1MB-binary",
            info,
            raw(b""),
            "RESOURCE_EXHAUSTED",
            metadata=(("x-junk-bin", b"\0" * (1 << 20)),),
        ),
        Case(
            "metadata-1000-headers",
            info,
            raw(b""),
            "RESOURCE_EXHAUSTED",
            metadata=tuple((f"x-h{i}", "v" * 20) for i in range(1000)),
        ),
        Case("metadata-7KiB-value", info, raw(b""), "OK", metadata=(("x-junk", "a" * (7 << 10)),)),
        Case(
            "metadata-binary-nul-and-utf8",
            info,
            raw(b""),
            "OK",
            metadata=(("x-junk-bin", b"\0\xff\n" + "♪ ünïcode".encode()),),
        ),
        Case(
            "metadata-api-key-without-keys-configured",
            info,
            raw(b""),
            "OK",
            metadata=(("x-api-key", "anything"), ("authorization", "Bearer x")),
        ),
        Case("metadata-bad-grpc-timeout", info, raw(b""), "OK", metadata=(("grpc-timeout", "xx"),)),
        Case(
            "metadata-continue-1MB-value",
            TOKGEN + "Continue",
            cont(**ANCESTRAL),
            "RESOURCE_EXHAUSTED",
            metadata=(("x-junk", "a" * (1 << 20)),),
        ),
    ]

    # -- job specs: SubmitJob runs Continue's checks (naming request.<field>), and decodes
    # the audio or codes as Continue does: a bad file is refused, not queued to FAIL later.
    cases += [
        Case(
            "submit-mode-99",
            JOBS + "SubmitJob",
            submit(mode=99, seconds=1),
            "INVALID_ARGUMENT",
            "request.mode",
        ),
        Case(
            "submit-negative-seconds",
            JOBS + "SubmitJob",
            submit(mode=pb.MODE_ANCESTRAL, seconds=-1),
            "INVALID_ARGUMENT",
            "request.seconds",
        ),
        Case(
            "submit-nan-seconds",
            JOBS + "SubmitJob",
            submit(mode=pb.MODE_ANCESTRAL, seconds=float("nan")),
            "INVALID_ARGUMENT",
            "request.seconds",
        ),
        Case(
            "submit-codes-for-mode-primed",
            JOBS + "SubmitJob",
            submit(mode=pb.MODE_PRIMED, seconds=1, codes=b"x"),
            "INVALID_ARGUMENT",
            "request.prime_audio",
        ),
        Case(
            "submit-priority-minus-5",
            JOBS + "SubmitJob",
            submit(**ANCESTRAL, priority=-5),
            "INVALID_ARGUMENT",
            "request.priority",
        ),
        Case(
            "submit-temperature-inf",
            JOBS + "SubmitJob",
            submit(**ANCESTRAL, sampling=pb.SamplingParams(temperature=float("inf"))),
            "INVALID_ARGUMENT",
            "request.sampling.temperature",
        ),
        Case(
            "submit-top-k-max-uint32",
            JOBS + "SubmitJob",
            submit(**ANCESTRAL, sampling=pb.SamplingParams(top_k=2**32 - 1)),
            "INVALID_ARGUMENT",
            "request.sampling.top_k",
        ),
        Case(
            "submit-seed-max-uint64",
            JOBS + "SubmitJob",
            submit(**ANCESTRAL, sampling=pb.SamplingParams(seed=2**64 - 1)),
            "INVALID_ARGUMENT",
            "request.sampling.seed",
        ),
        Case(
            "submit-idempotency-key-201-chars",
            JOBS + "SubmitJob",
            submit("k" * 201, **ANCESTRAL),
            "INVALID_ARGUMENT",
            "idempotency_key",
        ),
        # the limit counts characters, not bytes: 200 four-byte characters are fine
        Case("submit-idempotency-key-200-emoji", JOBS + "SubmitJob", submit("🎵" * 200, **ANCESTRAL), "OK"),
        Case("submit-idempotency-key-nul", JOBS + "SubmitJob", submit("a\0b", **ANCESTRAL), "OK"),
        Case(
            "submit-garbage-codes",
            JOBS + "SubmitJob",
            submit(mode=pb.MODE_CONTINUE, seconds=1, codes=b"garbage"),
            "INVALID_ARGUMENT",
            "request.codes",
        ),
        Case(
            "submit-codes-model-of-100M-characters",
            JOBS + "SubmitJob",
            submit(mode=pb.MODE_CONTINUE, seconds=1, codes=codes_with_long_model),
            "INVALID_ARGUMENT",
            "request.codes",
        ),
        Case(
            "submit-prime-flac-655-khz-8-channels",
            JOBS + "SubmitJob",
            submit(seconds=1, prime_audio=constant_flac(655_350, 8, 0.1)),
            "INVALID_ARGUMENT",
            "request.prime_audio",
        ),
        Case(
            "submit-garbage-prime",
            JOBS + "SubmitJob",
            submit(seconds=1, prime_audio=b"garbage"),
            "INVALID_ARGUMENT",
            "request.prime_audio",
        ),
    ]

    # -- job ids: at most 64 characters are looked up; anything else is NOT_FOUND
    def job(method: str, job_id: str) -> Build:
        request = {
            "GetJob": jpb.GetJobRequest,
            "CancelJob": jpb.CancelJobRequest,
            "GetJobResult": jpb.GetJobResultRequest,
            "WatchJob": jpb.WatchJobRequest,
        }[method]
        return raw(request(job_id=job_id).SerializeToString())

    for method in ("GetJob", "CancelJob", "GetJobResult", "WatchJob"):
        for name, job_id in {
            "nul": "\0",
            "unicode": "♪🎵ü",
            "65-chars": "f" * 65,
            "redis-glob": "*",
            "10k-chars": "x" * 10_000,
            "key-like": "tokgen:jobs",
        }.items():
            cases.append(Case(f"{method}-id-{name}", JOBS + method, job(method, job_id), "NOT_FOUND"))

    # -- ListJobs: page_size over 1000, an unknown state or a token that is not a cursor
    def listing(**fields) -> Build:
        return raw(jpb.ListJobsRequest(**fields).SerializeToString())

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode()

    cases += [
        Case(
            "list-page-size-1001", JOBS + "ListJobs", listing(page_size=1001), "INVALID_ARGUMENT", "page_size"
        ),
        Case(
            "list-page-size-max-uint32",
            JOBS + "ListJobs",
            listing(page_size=2**32 - 1),
            "INVALID_ARGUMENT",
            "page_size",
        ),
        Case("list-state-99", JOBS + "ListJobs", listing(state=99), "INVALID_ARGUMENT", "state"),
        Case("list-state-negative", JOBS + "ListJobs", listing(state=-1), "INVALID_ARGUMENT", "state"),
        Case(
            "list-token-text", JOBS + "ListJobs", listing(page_token="abc"), "INVALID_ARGUMENT", "page_token"
        ),
        Case(
            "list-token-negative",
            JOBS + "ListJobs",
            listing(page_token="-1"),
            "INVALID_ARGUMENT",
            "page_token",
        ),
        Case(
            "list-token-5000-digits",
            JOBS + "ListJobs",
            listing(page_token="1" * 5000),
            "INVALID_ARGUMENT",
            "page_token",
        ),  # past Python's int() digit limit
        Case("list-token-nul", JOBS + "ListJobs", listing(page_token="\0"), "INVALID_ARGUMENT", "page_token"),
        # tokens are cursors the server wrote (base64 JSON: a time, a job id, the listing's
        # state): offsets (the old tokens), other shapes and other listings' are refused
        *(
            Case(
                f"list-token-{name}",
                JOBS + "ListJobs",
                listing(page_token=token),
                "INVALID_ARGUMENT",
                "page_token",
            )
            for name, token in {
                "arabic-indic-3": "٣",
                "spaces-underscore": " 1_0 ",
                "2-pow-62": str(2**62),
                "an-old-offset": "2",
                "json-object": b64(b'{"a": 1, "b": 2, "c": 3}'),
                "json-infinite-time": b64(b'[1e999, "x", ""]'),
                "json-integer-time": b64(b'[1, "x", ""]'),
                "json-nested": b64(b"[" * 100 + b"]" * 100),
                "another-listings": page_token(Cursor(1e9, "a" * 32), JobState.QUEUED),
            }.items()
        ),
        Case(
            "list-token-before-every-job",
            JOBS + "ListJobs",
            listing(page_token=page_token(Cursor(0.0, ""), None)),
            "OK",
        ),  # empty page
    ]
    return cases


CASES = corpus()


# ---- a server with API keys (issue 17): the key is checked before the request is read -------

ALICE, BOB, OPERATOR = (f"{name}-fuzz-key-0123456789abcdef" for name in ("alice", "bob", "operator"))


def as_key(key: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", key),)


# Credentials that are not a key of the server: none, another, almost one, one in the
# wrong header form.
NOT_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "no-key": (),
    "wrong-key": as_key("wrong-fuzz-key-0123456789abcdef"),
    "key-minus-its-last-char": as_key(ALICE[:-1]),
    "key-plus-a-char": as_key(ALICE + "x"),
    "empty-key": as_key(""),
    "bearer-wrong": (("authorization", "Bearer wrong-fuzz-key-0123456789abcdef"),),
    "bearer-without-the-word": (("authorization", ALICE),),
    "key-in-another-header": (("x-api-token", ALICE),),
}
# Requests of every kind: garbage, empty, valid, and over --max-request-bytes.
KEYLESS_PAYLOADS: dict[str, Build] = {
    "not-protobuf": raw(NOT_PROTOBUF["not-protobuf"]),
    "empty": raw(b""),
    "valid-ancestral": cont(**ANCESTRAL),
    "over-max-request-bytes": raw(b"\0" * (2 * MAX_REQUEST_BYTES)),
}


def keyed_corpus() -> list[Case]:
    """For the keyed server: without a valid key every method (reflection too) is
    UNAUTHENTICATED whatever the request (never INVALID_ARGUMENT, nor RESOURCE_EXHAUSTED for
    its size: it is not read); with a key the same bytes get what they always got."""
    cases: list[Case] = []
    for method in [*METHODS, REFLECTION]:
        for who, metadata in NOT_KEYS.items():
            for name, payload in KEYLESS_PAYLOADS.items():
                cases.append(
                    Case(
                        f"{who}-{_short(method)}-{name}",
                        method,
                        payload,
                        "UNAUTHENTICATED",
                        metadata=metadata,
                    )
                )
        if method != REFLECTION:
            cases.append(
                Case(
                    f"alice-{_short(method)}-not-protobuf",
                    method,
                    KEYLESS_PAYLOADS["not-protobuf"],
                    "INVALID_ARGUMENT",
                    metadata=as_key(ALICE),
                )
            )
        cases.append(
            Case(
                f"alice-{_short(method)}-over-max-request-bytes",
                method,
                KEYLESS_PAYLOADS["over-max-request-bytes"],
                "RESOURCE_EXHAUSTED",
                metadata=as_key(ALICE),
            )
        )
    return cases


KEYED_CASES = keyed_corpus()


# ---- bugs this suite found: regressions in test_fuzz.py (each was an UNKNOWN) -------------


def bug_codes_cases() -> dict[str, Build]:
    """Codes files that made the server raise an uncaught exception (UNKNOWN)."""
    cont_codes = lambda build: cont(mode=pb.MODE_CONTINUE, seconds=0.1, codes=build)  # noqa: E731
    return {
        # np.load returns an ndarray, not an NpzFile: `with` fails (TypeError)
        "npy-not-npz": cont_codes(raw(npy(np.zeros(4, np.int16)))),
        # int(array of 2) -> TypeError
        "sample-rate-is-an-array": cont_codes(lambda i: codes_file(i, sample_rate=np.array([1, 2]))),
        # iterating a 0-d array -> TypeError
        "hops-is-a-scalar": cont_codes(lambda i: codes_file(i, hops=np.array(3))),
        # 2-D top level passes every check, then cannot be broadcast (ValueError)
        "top-level-2d": cont_codes(lambda i: codes_file(i, codes_0=np.zeros((10, 3), np.int16))),
        # 0-d top level: IndexError
        "top-level-0d": cont_codes(lambda i: codes_file(i, codes_0=np.array(3, np.int16))),
    }
