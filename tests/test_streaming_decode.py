"""Streaming decode: pieces decoded as codes arrive join into one whole decode."""

import numpy as np
import pytest

from tokgen.codec import load_codec
from tokgen.codec.streaming import StreamDecoder


@pytest.mark.parametrize("arrivals", [[7, 30, 31, 90, 200], [1, 2, 3, 5, 8, 13, 200], [200]])
def test_stream_joins_into_the_whole_decode(tiny_model_dir, tone, arrivals):
    codec = load_codec(tiny_model_dir)
    codes = codec.encode(tone[:1600])[1]  # 200 bottom frames of 8 samples
    whole = codec.decode(codes, 1)
    stream = StreamDecoder(codec, 1)
    pieces = [stream.push(codes[:n]) for n in arrivals] + [stream.push(codes, final=True)]
    joined = np.concatenate(pieces)
    assert joined.size == whole.size == 1600
    assert np.abs(joined - whole).max() < 1e-5
    # Every piece but the last waited for margin frames of look-ahead.
    assert sum(p.size for p in pieces[:-1]) <= (arrivals[-1] - stream.margin) * 8


def test_min_frames_batches_small_arrivals(tiny_model_dir, tone):
    codec = load_codec(tiny_model_dir)
    codes = codec.encode(tone[:1600])[1]
    stream = StreamDecoder(codec, 1, min_frames=50)
    sizes = [stream.push(codes[:n]).size for n in range(1, 201)]
    assert all(s == 0 or s >= 50 * 8 for s in sizes)
    assert sum(sizes) + stream.push(codes, final=True).size == 1600
