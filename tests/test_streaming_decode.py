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


def _early_stream(codec, codes, reference, start, lead, ahead, known):
    """An early first piece from ``known`` middle frames (``lead`` top frames are the lead),
    then the rest with every code known: (first piece, the rest)."""
    per_top = codec.levels[0].hop // codec.levels[1].hop
    decoder = StreamDecoder(codec, 1, min_frames=lead * per_top - ahead, reference=reference)
    decoder.first_lookahead, decoder.emitted = ahead, start
    assert not decoder.ready(start + lead * per_top - 1)  # the lead's codes, not one fewer
    stop = start + known
    piece = decoder.push(codes[1][:stop], upper=[codes[0][: -(-stop // per_top) + 1]])
    return piece, decoder.push(codes[1], final=True, upper=[codes[0]])


def test_an_early_first_piece_reads_only_the_lead_and_fades_into_the_exact_audio():
    """``first_lookahead`` shorter than the decoder's lookahead: the first piece comes from
    the lead's codes alone (the same piece whatever else has arrived: same codes, same
    audio), close to the exact decode; it fades into the second piece without a step, and
    from the end of the fade the stream is the whole decode again."""
    from tokgen.assets import EXAMPLE_PRIME
    from tokgen.audio import load_audio
    from tokgen.codec.streaming import FADE_FRAMES
    from tokgen.codec.top_levels import TopLevels

    codec = TopLevels(load_codec(), 2)
    audio = load_audio(EXAMPLE_PRIME, codec.sample_rate)[: 6 * codec.sample_rate]
    codes, reference = codec.encode(audio), audio[-codec.sample_rate :]
    whole = codec.decode_levels(codes, reference)
    hop, lead, ahead = codec.levels[1].hop, 5, 14
    for start in (64, 200, 332):
        piece, rest = _early_stream(codec, codes, reference, start, lead, ahead, known=lead * 4)
        again, _ = _early_stream(codec, codes, reference, start, lead, ahead, known=codes[1].size - start)
        assert np.array_equal(piece, again)
        assert piece.size == (lead * 4 - ahead) * hop
        target = whole[start * hop :]
        a = target[: piece.size]
        assert 10 * np.log10(np.sum(a**2) / np.sum((piece - a) ** 2)) > 30  # 46.9 dB over the prime
        n, fade = piece.size, FADE_FRAMES * hop
        assert np.abs(rest[fade:] - target[n + fade :]).max() < 1e-5
        joined = np.concatenate([piece, rest])
        steps = np.abs(np.diff(joined[n - 64 : n + fade + 64]))
        assert steps.max() <= 1.5 * np.abs(np.diff(target[n - 64 : n + fade + 64])).max()


def test_a_first_lookahead_as_long_as_the_decoders_is_exact(tiny_model_dir, tone):
    codec = load_codec(tiny_model_dir)
    codes = codec.encode(tone[:1600])[1]
    stream = StreamDecoder(codec, 1, min_frames=10)
    stream.first_lookahead = stream.lookahead + 5  # more than the decoder reads: no early piece
    pieces = [stream.push(codes[:n]) for n in (40, 90)] + [stream.push(codes, final=True)]
    assert np.abs(np.concatenate(pieces) - codec.decode(codes, 1)).max() < 1e-5
