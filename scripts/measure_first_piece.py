"""How close an early first piece is to the exact decode (``StreamDecoder.first_lookahead``).

A stream's first piece may be decoded from the codes up to ``first_lookahead`` frames after
it instead of the decoder's whole lookahead, so every level's lead window is shorter and
the first audio comes sooner (``generation.generate.DEFAULT_FIRST_LOOKAHEAD_SECONDS``).
This streams the example prime's own codes (top + middle levels, the shipped codec, its
last 2 s as the timbre reference) from many start points the way a stream does: a first
piece from the lead's codes alone, then the rest with every code known. Per first
lookahead: the first pieces' SNR against the whole decode, the SNR of the fade into the
exact audio (``FADE_FRAMES`` after the first piece), the largest error after the fade
(float rounding: the rest is exact), and the lead in top frames it needs.

    python scripts/measure_first_piece.py
"""

from __future__ import annotations

import numpy as np

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.codes import REFERENCE_SECONDS
from tokgen.codec.streaming import FADE_FRAMES, StreamDecoder
from tokgen.codec.top_levels import TopLevels
from tokgen.generation.generate import DEFAULT_FIRST_PIECE_SECONDS, lead_top_frames


def snr(error: float, signal: float) -> float:
    return float(10 * np.log10(signal / max(error, 1e-30)))


def main() -> None:
    codec = TopLevels(load_codec(), 2)
    x = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    codes, reference = codec.encode(x), x[-int(REFERENCE_SECONDS * codec.sample_rate) :]
    whole = codec.decode_levels(codes, reference)
    hop, per_top = codec.levels[1].hop, codec.levels[0].hop // codec.levels[1].hop
    full = codec.decode_lookahead(1)
    print(f"the decoder's whole lookahead: {full} frames ({full * hop / codec.sample_rate * 1000:.0f} ms)")
    for ahead in sorted({full, 22, 18, 14, 10, 6, 2}, reverse=True):
        lead = lead_top_frames(codec, DEFAULT_FIRST_PIECE_SECONDS, ahead)
        first = lead * per_top - ahead  # frames in the first piece
        sums = np.zeros(4)  # first piece: error, signal; the fade: error, signal
        after = 0.0
        for start_top in range(12, codes[0].size - lead - 20, 5):
            start = start_top * per_top
            decoder = StreamDecoder(codec, 1, min_frames=first, reference=reference)
            decoder.first_lookahead, decoder.emitted = ahead, start
            stop = start + lead * per_top
            piece = decoder.push(codes[1][:stop], upper=[codes[0][: start_top + lead]])
            rest = decoder.push(codes[1], final=True, upper=[codes[0]])
            target = whole[start * hop :]
            fade = FADE_FRAMES * hop
            a, b = target[: piece.size], target[piece.size : piece.size + fade]
            sums += [np.sum((piece - a) ** 2), np.sum(a**2), np.sum((rest[:fade] - b) ** 2), np.sum(b**2)]
            after = max(after, float(np.abs(rest[fade:] - target[piece.size + fade :]).max()))
        print(
            f"first lookahead {ahead:>2} frames: lead {lead} top frames, first piece {first} frames "
            f"({first * hop / codec.sample_rate * 1000:.0f} ms) at SNR {snr(sums[0], sums[1]):.1f} dB, "
            f"fade {snr(sums[2], sums[3]):.1f} dB, largest error after it {after:.1e}"
        )


if __name__ == "__main__":
    main()
