"""Codes files (``.npz``): the codes of every level plus what is needed to decode them.

Keys: ``codes_<level>`` (int arrays, level 0 = top), ``sample_rate``, ``hops``,
``num_samples`` (the original length, so a decode is trimmed back to it), ``model`` and,
optionally, ``reference``: a short clip of the source audio (16-bit PCM at the codec's rate)
whose timbre a codec with a timbre encoder (``msvq``) decodes the codes in. Without it such
a codec decodes with its neutral timbre, and continuations lose the prime's instrument.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from tokgen.codec.base import Codec
from tokgen.errors import TokgenError


@dataclass
class CodesFile:
    codes: list[np.ndarray]
    sample_rate: int
    hops: list[int]
    num_samples: int
    model: str
    reference: np.ndarray | None = None  # float32 audio at ``sample_rate``

    def check_matches(self, codec: Codec) -> None:
        """Codes only make sense to the codec that made them: fail clearly otherwise."""
        hops = [lv.hop for lv in codec.levels]
        if self.model != codec.name or self.sample_rate != codec.sample_rate or self.hops != hops:
            raise TokgenError(
                f"these codes were made by {self.model!r} ({self.sample_rate} Hz, hops {self.hops}), "
                f"which does not match codec {codec.name!r} ({codec.sample_rate} Hz, hops {hops}); "
                "pass --model (or --codec) pointing at the codec that encoded them"
            )
        for level, (c, spec) in enumerate(zip(self.codes, codec.levels, strict=False)):
            if c.size and (c.min() < 0 or c.max() >= spec.codebook_size):
                raise TokgenError(f"level {level} holds codes outside [0, {spec.codebook_size})")


# The longest timbre reference a codes file carries (what generation keeps of a prime is 2 s).
REFERENCE_SECONDS = 2.0
MAX_REFERENCE_SAMPLES = 10 * 48_000  # what a reader accepts: 10 s at the highest codec rate


def reference_clip(audio: np.ndarray, sample_rate: int, seconds: float = REFERENCE_SECONDS) -> np.ndarray:
    """The loudest ``seconds`` of ``audio`` (in quarter-window steps): the timbre reference of
    a whole recording, which may start or end in silence."""
    n = int(seconds * sample_rate)
    if audio.size <= n:
        return audio.astype(np.float32)
    step = max(1, n // 4)
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    starts = np.arange(0, audio.size - n + 1, step)
    best = int(starts[np.argmax(energy[starts + n] - energy[starts])])
    return audio[best : best + n].astype(np.float32)


def dump_codes(
    codes: list[np.ndarray], codec: Codec, num_samples: int, reference: np.ndarray | None = None
) -> bytes:
    """A codes file's bytes (.npz): every level, the codec's name, rate and hops, and the
    last ``REFERENCE_SECONDS`` of ``reference`` audio (the prime) if given."""
    dtype = np.int16 if max(lv.codebook_size for lv in codec.levels) <= 32767 else np.int32
    arrays: dict[str, np.ndarray] = {f"codes_{i}": c.astype(dtype) for i, c in enumerate(codes)}
    arrays["sample_rate"] = np.asarray(codec.sample_rate, dtype=np.int64)
    arrays["hops"] = np.asarray([lv.hop for lv in codec.levels], dtype=np.int64)
    arrays["num_samples"] = np.asarray(num_samples, dtype=np.int64)
    arrays["model"] = np.asarray(codec.name)
    if reference is not None and reference.size:
        clip = np.clip(reference[-int(REFERENCE_SECONDS * codec.sample_rate) :], -1.0, 1.0)
        arrays["reference"] = np.round(clip * 32767).astype(np.int16)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def save_codes(
    path: str | Path,
    codes: list[np.ndarray],
    codec: Codec,
    num_samples: int,
    reference: np.ndarray | None = None,
) -> None:
    path = Path(path)
    if path.suffix != ".npz":
        raise TokgenError(f"codes are saved as .npz; got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    tmp.write_bytes(dump_codes(codes, codec, num_samples, reference))
    tmp.replace(path)  # a reader never sees half a file, even if we are killed while writing


# Bounds on a codes file, checked before anything in it is decompressed: a few KB of
# deflated zeros can claim gigabytes (issue 17), so every entry's dtype, shape and size are
# read from its header first and the zip's own sizes are bounded too.
MAX_LEVELS = 16  # codes_<level> arrays
MAX_ENTRIES = MAX_LEVELS + 8  # zip members: the levels, the five fields and a few spare
MAX_MODEL_CHARS = 256  # the codec's name
MAX_CODES_BYTES = 256 << 20  # decompressed bytes of a whole file when no max_frames is given
_MAX_DIRECTORY_BYTES = 64 << 10  # the zip's central directory (a tokgen file's is < 1 KiB)
_SLACK_BYTES = 64 << 10  # headers, the scalars and the name, on top of the codes
_NUMPY_MAGIC = b"\x93NUMPY"


def _budget(max_frames: int | None, levels: int) -> int:
    """The most decompressed bytes a codes file may hold: every level at most ``max_frames``
    8-byte codes, plus headers, scalars and the name."""
    if max_frames is None:
        return MAX_CODES_BYTES
    return levels * max(max_frames, 0) * 8 + 2 * MAX_REFERENCE_SAMPLES + _SLACK_BYTES


def _check_directory(file: BinaryIO, what: str) -> None:
    """Bound the zip's central directory before ``zipfile`` parses it: it makes an object per
    entry, and 64 MiB of directory is a million entries."""
    end = zipfile._EndRecData(file)  # type: ignore[attr-defined]  # what ZipFile itself reads
    file.seek(0)
    if end is None:
        raise TokgenError(f"{what} is not a valid tokgen codes file: not a zip archive (.npz)")
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > MAX_ENTRIES or size > _MAX_DIRECTORY_BYTES:
        raise TokgenError(
            f"{what} is not a valid tokgen codes file: its archive lists {entries} entries in "
            f"{size} bytes; a codes file has at most {MAX_ENTRIES}"
        )


@dataclass
class _Entry:
    """One .npy member whose header has been read: ``read`` decompresses its data."""

    key: str
    info: zipfile.ZipInfo
    offset: int  # where the data starts (after the magic and the header)
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    nbytes: int

    def read(self, archive: zipfile.ZipFile, what: str) -> np.ndarray:
        with archive.open(self.info) as f:
            f.read(self.offset)
            data = f.read(self.nbytes)
        if len(data) != self.nbytes:
            raise TokgenError(f"{what}: {self.key} is truncated ({len(data)} of {self.nbytes} bytes)")
        array = np.frombuffer(data, dtype=self.dtype, count=math.prod(self.shape))
        return array.reshape(self.shape, order="F" if self.fortran else "C")


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, what: str) -> _Entry:
    """A member's shape and dtype from its .npy header (only its first bytes are inflated)."""
    key = info.filename.removesuffix(".npy")
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(f)  # numpy bounds a header at 10,000 bytes
        elif version == (2, 0):
            header = np.lib.format.read_array_header_2_0(f)  # numpy bounds a header at 10,000 bytes
        else:
            raise TokgenError(f"{what}: {key} is a .npy of version {version}; expected 1.0 or 2.0")
        offset = f.tell()
    shape, fortran, dtype = tuple(header[0]), bool(header[1]), np.dtype(header[2])
    if any(d < 0 for d in shape):
        raise TokgenError(f"{what}: {key} has a negative dimension in its shape {shape}")
    if dtype.hasobject or dtype.names is not None or dtype.subdtype is not None:
        raise TokgenError(f"{what}: {key} holds {dtype} data; a codes file holds integers and a name")
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes > info.file_size:
        raise TokgenError(f"{what}: {key} is truncated ({info.file_size} bytes for {nbytes} of data)")
    return _Entry(key, info, offset, shape, fortran, dtype, nbytes)


def _check_entry(entry: _Entry, what: str, want: tuple[int, ...] | None, kinds: str, itemsize: int) -> None:
    """``entry`` has the shape ``want`` (any 1-D one for None), a dtype of one of ``kinds`` and
    items of at most ``itemsize`` bytes."""
    shape_ok = len(entry.shape) == 1 if want is None else entry.shape == want
    if not shape_ok:
        wanted = "be 1-D" if want is None else f"have shape {want}"
        raise TokgenError(f"{what}: {entry.key} must {wanted}, not of shape {entry.shape}")
    if entry.dtype.kind not in kinds or entry.dtype.itemsize > itemsize:
        kind = "a name (text)" if kinds == "U" else "integers"
        limit = f"at most {MAX_MODEL_CHARS} characters" if kinds == "U" else f"at most {itemsize} bytes each"
        raise TokgenError(f"{what}: {entry.key} must hold {kind}, {limit}; it holds {entry.dtype}")


def load_codes(source: str | Path | bytes, max_frames: int | None = None) -> CodesFile:
    """Read a codes file from a path or from its bytes (e.g. sent over the network).

    Nothing is decompressed before it is bounded: the archive's directory (at most
    ``MAX_ENTRIES`` members), each member's declared size, and each array's header: one 1-D
    integer array per level (at most ``MAX_LEVELS``) of at most ``max_frames`` codes, integer
    scalars where scalars belong and a name of at most ``MAX_MODEL_CHARS`` characters; all
    of it at most ``_budget(max_frames)`` bytes once decompressed. Anything else, object
    (pickled) arrays included, is a ``TokgenError``."""
    if isinstance(source, bytes):
        what = "the codes"
        file: BinaryIO = io.BytesIO(source)
    else:
        what = str(source)
        if not Path(source).is_file():
            raise TokgenError(f"codes file not found: {source}")
        file = open(source, "rb")  # noqa: SIM115 (closed below)
    try:
        with file:
            if file.read(len(_NUMPY_MAGIC)) == _NUMPY_MAGIC:
                raise TokgenError(f"{what} is a single array (.npy), not a codes file (.npz)")
            file.seek(0)
            _check_directory(file, what)
            with zipfile.ZipFile(file) as archive:
                return _load(archive, what, max_frames)
    except (OSError, ValueError, KeyError, TypeError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise TokgenError(f"{what} is not a valid tokgen codes file: {exc}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, struct.error) as exc:
        raise TokgenError(f"{what} is not a valid tokgen codes file: {exc}") from exc


def _load(archive: zipfile.ZipFile, what: str, max_frames: int | None) -> CodesFile:
    members = archive.infolist()
    if len(members) > MAX_ENTRIES:
        raise TokgenError(f"{what} holds {len(members)} entries; a codes file has at most {MAX_ENTRIES}")
    by_name = {info.filename: info for info in members}
    n = len([name for name in by_name if name.startswith("codes_")])
    if n == 0:
        raise TokgenError(f"{what} holds no codes_<level> arrays; was it written by `tokgen encode`?")
    if n > MAX_LEVELS:
        raise TokgenError(f"{what} holds {n} levels of codes; at most {MAX_LEVELS}")
    budget = _budget(max_frames, n)
    declared = sum(info.file_size for info in members)
    if declared > budget:
        raise TokgenError(
            f"{what} declares {declared} bytes once decompressed; at most {budget} for "
            f"{n} levels of at most {max_frames} codes"
            if max_frames is not None
            else f"{what} declares {declared} bytes once decompressed; at most {budget}"
        )
    for member in members:
        if member.flag_bits & 0x1:
            raise TokgenError(f"{what}: {member.filename} is encrypted")
        if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise TokgenError(f"{what}: {member.filename} is compressed with method {member.compress_type}")
    wanted = {f"codes_{i}": None for i in range(n)} | {
        "sample_rate": (),
        "num_samples": (),
        "hops": (n,),
        "model": (),
    }
    entries: dict[str, _Entry] = {}
    for key, shape in wanted.items():
        info = by_name.get(f"{key}.npy")
        if info is None:
            raise TokgenError(f"{what} is not a valid tokgen codes file: it has no {key} entry")
        entry = entries[key] = _header(archive, info, what)
        if key == "model":
            _check_entry(entry, what, shape, "U", 4 * MAX_MODEL_CHARS)
        else:
            _check_entry(entry, what, shape, "iu", 8)
        if shape is None and max_frames is not None and entry.shape[0] > max_frames:
            raise TokgenError(f"{what}: {key} holds {entry.shape[0]} codes, more than {max_frames}")
    info = by_name.get("reference.npy")
    if info is not None:
        entry = entries["reference"] = _header(archive, info, what)
        _check_entry(entry, what, None, "i", 2)
        if entry.shape[0] > MAX_REFERENCE_SAMPLES:
            raise TokgenError(
                f"{what}: its timbre reference holds {entry.shape[0]} samples, "
                f"more than {MAX_REFERENCE_SAMPLES}"
            )
    # Every header is checked; the data is now bounded by the budget.
    arrays = {key: entry.read(archive, what) for key, entry in entries.items()}
    reference = arrays.get("reference")
    return CodesFile(
        codes=[arrays[f"codes_{i}"].astype(np.int64) for i in range(n)],
        sample_rate=int(arrays["sample_rate"]),
        hops=[int(h) for h in arrays["hops"]],
        num_samples=int(arrays["num_samples"]),
        model=str(arrays["model"][()]),
        reference=None if reference is None else reference.astype(np.float32) / 32767,
    )
