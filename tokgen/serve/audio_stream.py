"""One audio file written while its samples are still being generated (the HTTP API's
streamed continuations).

A continuation's audio arrives in pieces over seconds, and an HTTP client should hear the
first piece before the last one exists, so the file is sent as it is written. That rules
out what most encoders do at the end, seeking back to patch lengths into the header, so:

- WAV gets a header written here, up front, with the length the request asked for (the
  server cuts the stream to exactly that); an unknown length is the largest one the
  format can state, which players read as "until the data ends".
- FLAC: libsndfile's header says "length unknown" until its final patch, which libsndfile
  itself then cannot read, so the length asked for is patched into the header before it
  is sent.
- MP3 is written at a constant bit rate: a reader without the summary frame the encoder
  patches in at the end estimates the length from the bit rate, which is then exact.
- Ogg (Vorbis, Opus) needs no patch: its pages are final as written.

Any other change an encoder makes to bytes already sent is dropped; the formats above are
playable without them (tested in ``tests/test_http.py``).
"""

from __future__ import annotations

import struct

import numpy as np
import soundfile as sf

from tokgen.audio import OUTPUT_FORMATS, output_format

# What the ``format`` field of a request accepts: the extensions tokgen writes, undotted.
FORMATS = tuple(suffix.removeprefix(".") for suffix in OUTPUT_FORMATS)
CONTENT_TYPES = {
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "opus": "audio/ogg; codecs=opus",
    "mp3": "audio/mpeg",
}
UNKNOWN_LENGTH = 0xFFFFFFFF  # a WAV size field's largest value: "read until the data ends"
MP3_QUALITY = 0.6  # libsndfile's compression level at a constant bit rate: 64 kbit/s at 16 kHz


def wav_header(sample_rate: int, samples: int | None) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV file of ``samples`` samples (None:
    unknown, as a stream cut short or of unknown length)."""
    data = samples * 2 if samples is not None else UNKNOWN_LENGTH
    riff = min(36 + data, UNKNOWN_LENGTH)
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"data"
        + (struct.pack("<I", min(data, UNKNOWN_LENGTH)))
    )


class _Unsent:
    """The file libsndfile writes into: a growing buffer from which the bytes not yet sent
    are taken (``take``). Writes over bytes already sent change nothing that was sent."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.pos = 0
        self.sent = 0

    def write(self, data: bytes) -> int:
        data = bytes(data)
        self.data[self.pos : self.pos + len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = (0, self.pos, len(self.data))[whence] + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:
        end = len(self.data) if size < 0 else self.pos + size
        out = bytes(self.data[self.pos : end])
        self.pos += len(out)
        return out

    def take(self) -> bytes:
        out = bytes(self.data[self.sent :])
        self.sent = len(self.data)
        return out


class StreamEncoder:
    """``format`` (one of ``FORMATS``) written a piece at a time: ``header`` first, then
    ``add(pcm)`` for each piece of 16-bit PCM, then ``finish``; each returns the bytes to
    send now (possibly none: an encoder may hold samples back until it has a frame).
    ``samples``: how many the whole stream will hold, if known."""

    def __init__(self, format: str, sample_rate: int, samples: int | None):
        self.format = format
        self.content_type = CONTENT_TYPES.get(format, "application/octet-stream")
        self.sample_rate = sample_rate
        self.samples = samples
        self._sink: _Unsent | None = None
        self._file: sf.SoundFile | None = None
        self._patched = False
        if format != "wav":
            kind, subtype = output_format(f"x.{format}")
            self._sink = _Unsent()
            extra = {"bitrate_mode": "CONSTANT", "compression_level": MP3_QUALITY} if kind == "MP3" else {}
            self._file = sf.SoundFile(self._sink, "w", sample_rate, 1, subtype, format=kind, **extra)

    def header(self) -> bytes:
        return wav_header(self.sample_rate, self.samples) if self._file is None else b""

    def add(self, pcm: bytes) -> bytes:
        if self._file is None:
            return pcm
        self._file.write(np.frombuffer(pcm, "<i2"))
        return self._take()

    def finish(self) -> bytes:
        if self._file is None:
            return b""
        self._file.close()
        return self._take()

    def _take(self) -> bytes:
        assert self._sink is not None
        out = self._sink.take()
        if self.format == "flac" and not self._patched and out:
            out, self._patched = flac_with_length(out, self.samples), True
        return out


def flac_with_length(start: bytes, samples: int | None) -> bytes:
    """The first bytes of a FLAC file with ``samples`` as the total in its STREAMINFO
    block (36 bits: the low 4 bits of byte 21 and bytes 22-25 of the file)."""
    if samples is None or len(start) < 26 or not start.startswith(b"fLaC"):
        return start
    field = int.from_bytes(start[21:26], "big")
    field = (field & ~((1 << 36) - 1)) | (samples & ((1 << 36) - 1))
    return start[:21] + field.to_bytes(5, "big") + start[26:]
