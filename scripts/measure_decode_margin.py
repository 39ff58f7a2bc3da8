"""How far ahead the shipped decoder really looks: pieces decoded with only m frames of
context on each side, against the whole decode (top + middle levels, the generation path,
the example prime with its last 2 s as the timbre reference).

``StreamDecoder`` waits for ``decode_margin`` frames after a piece (the decoder's whole
receptive field: 34 middle frames, 0.27 s, for the msvq codec) so that pieces join into
exactly one decode; that margin is also what every level's lead window must cover before
the first audio. Measured 2026-12-02, SNR of the pieces against the whole decode at
m = 4 / 8 / 12 / 16 / 20 / 24 / 28 / 34 frames: shipped (swap-trained) decoder 17.6 / 24.7 /
36.4 / 51.5 / 68.2 / 86.2 / 145.9 / 320.1 dB; the decoder before it 22.9 / 34.1 / 46.8 /
57.9 / 73.0 / 95.3 / 140.7 / 220.8 dB. So 28 frames are exact to the 16-bit PCM the service
sends (about 98 dB): the last 6 frames of the receptive field do not matter.

    python scripts/measure_decode_margin.py
"""

from __future__ import annotations

import numpy as np

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.codes import REFERENCE_SECONDS
from tokgen.codec.top_levels import TopLevels

PIECE = 16  # frames per piece


def main() -> None:
    codec = TopLevels(load_codec(), 2)
    x = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    codes, reference = codec.encode(x), x[-int(REFERENCE_SECONDS * codec.sample_rate) :]
    whole = codec.decode_levels(codes, reference)
    hop = codec.levels[1].hop
    per_top = codec.levels[0].hop // hop
    n, exact = codes[1].size, codec.decode_margin(1)
    print(f"exact margin: {exact} frames ({exact * hop / codec.sample_rate * 1000:.0f} ms)")
    for m in (4, 8, 12, 16, 20, 24, 28, exact):
        error = signal = 0.0
        for stop in range(200, n - 60, 37):  # the piece is frames [stop - PIECE, stop)
            lo = max(0, stop - PIECE - m)
            lo -= lo % per_top  # crops start on whole top frames, as StreamDecoder's do
            hi = min(n, stop + m)
            crops = [codes[0][lo // per_top : -(-hi // per_top)], codes[1][lo:hi]]
            audio = codec.decode_levels(crops, reference)
            piece = audio[(stop - PIECE - lo) * hop : (stop - lo) * hop]
            target = whole[(stop - PIECE) * hop : stop * hop]
            error += float(np.sum((piece - target) ** 2))
            signal += float(np.sum(target**2))
        snr = 10 * np.log10(signal / max(error, 1e-30))
        print(f"margin {m:>2} frames ({m * hop / codec.sample_rate * 1000:.0f} ms): SNR {snr:6.1f} dB")


if __name__ == "__main__":
    main()
