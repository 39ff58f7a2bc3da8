"""What streaming costs the decoder: the example prime's codes (top + middle, the generation
path) fed to ``StreamDecoder`` one middle frame at a time, as a stream's codes arrive, with
the pieces ``stream_continuation`` would cut (a 6-frame first piece, then either a fixed
size or pieces that double, ``next_piece_frames``, as for a stream far enough ahead of its
listener), against one decode of all the codes.

"crops": every piece decoded from a crop with the decoder's margin before it and its
lookahead after it (34 + 29 middle frames, 0.5 s; ``StreamDecoder(incremental=False)``),
so the decoder time grows with the number of pieces. "incremental": the msvq codec's
``FourierStream`` (the default since 2026-12-03), which computes each frame once. The
schedules run alternately, ``--rounds`` times, in one process: read the ratios, not the
absolute seconds (the cores may be shared). Each schedule's joined pieces are checked
against the whole decode.

    OMP_NUM_THREADS=1 python scripts/measure_stream_decode.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.codes import REFERENCE_SECONDS
from tokgen.codec.streaming import StreamDecoder
from tokgen.codec.top_levels import TopLevels
from tokgen.generation.stream import next_piece_frames

FIRST = 6  # frames: about what the lead window makes final before the first piece


def streamed(
    codec: TopLevels,
    codes: list[np.ndarray],
    reference: np.ndarray,
    grow: bool,
    fixed: int,
    largest: int,
    incremental: bool,
):
    """(decoder seconds, pieces, joined audio) of one stream of ``codes``."""
    per_top = codec.levels[0].hop // codec.levels[1].hop
    decoder = StreamDecoder(codec, 1, min_frames=FIRST, reference=reference, incremental=incremental)
    pieces, spent = [], 0.0
    n = codes[1].size
    for known in range(1, n + 1):
        final = known == n
        started = time.perf_counter()
        piece = decoder.push(codes[1][:known], final, [codes[0][: -(-known // per_top)]])
        if piece.size:
            spent += time.perf_counter() - started
            pieces.append(piece)
            last = piece.size // codec.levels[1].hop
            # as for a stream far ahead of its listener: growth is not held back
            decoder.min_frames = next_piece_frames(last, 2 * n, fixed, largest) if grow else fixed
    return spent, len(pieces), np.concatenate(pieces)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    codec = TopLevels(load_codec(), 2)
    x = load_audio(EXAMPLE_PRIME, codec.sample_rate)
    codes, reference = codec.encode(x), x[-int(REFERENCE_SECONDS * codec.sample_rate) :]
    seconds = codes[1].size * codec.levels[1].hop / codec.sample_rate
    frames = lambda s: round(s * codec.sample_rate / codec.levels[1].hop)  # noqa: E731
    schedules = {
        "whole (one decode)": None,
        "crops, fixed 0.25 s": (False, frames(0.25), frames(0.25), False),
        "crops, 0.25 -> 1 s": (True, frames(0.25), frames(1.0), False),
        "crops, 0.25 -> 2 s": (True, frames(0.25), frames(2.0), False),
        "incremental, fixed 0.25 s": (False, frames(0.25), frames(0.25), True),
        "incremental, 0.25 -> 1 s": (True, frames(0.25), frames(1.0), True),
    }
    times: dict[str, list[float]] = {name: [] for name in schedules}
    counts: dict[str, int] = {}
    whole = codec.decode_levels(codes, reference)
    for _ in range(args.rounds):
        for name, schedule in schedules.items():
            if schedule is None:
                started = time.perf_counter()
                codec.decode_levels(codes, reference)
                times[name].append(time.perf_counter() - started)
                counts[name] = 1
                continue
            spent, count, joined = streamed(codec, codes, reference, *schedule)
            assert joined.size == whole.size and np.abs(joined - whole).max() < 1e-4, name
            times[name].append(spent)
            counts[name] = count
    base = float(np.median(times["whole (one decode)"]))
    print(f"{seconds:.1f} s of codes, {args.rounds} rounds; decoder seconds (median) and x one decode")
    for name, spent in times.items():
        median = float(np.median(spent))
        print(f"{name:>26}: {counts[name]:3d} decodes  {median:6.3f} s  {median / base:5.2f}x")


if __name__ == "__main__":
    main()
