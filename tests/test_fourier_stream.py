"""The msvq decoder run incrementally (``codec.fourier_stream``): each frame computed once
as codes arrive, the pieces joining into one whole decode, whatever the arrivals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokgen.assets import EXAMPLE_PRIME
from tokgen.audio import load_audio
from tokgen.codec import load_codec
from tokgen.codec.msvq import MSVQCodec, MSVQConfig, MultiScaleVQ
from tokgen.codec.streaming import StreamDecoder
from tokgen.codec.top_levels import TopLevels

# Three levels (hops 512, 128, 32), a decoder frame of 4 bottom frames: a small random
# model of the shipped codec's shape (exactness does not depend on the weights).
THREE = MSVQConfig(
    encoder_strides=[2, 4, 4],
    encoder_channels=[4, 8, 8, 16],
    latent_dim=16,
    level_strides=[16, 4, 1],
    codebook_size=32,
    code_dim=8,
    decoder_hop=128,
    decoder_dim=16,
    decoder_intermediate=32,
    decoder_layers=3,
    timbre_dim=8,
    pitch_features=False,
)


def random_codec(seed: int = 0, lookahead: int = 3) -> MSVQCodec:
    torch.manual_seed(seed)
    model = MultiScaleVQ(THREE.model_copy(update={"decoder_lookahead": lookahead}))
    for p in model.parameters():  # FiLM and the code tables start at zero or constants
        p.data.normal_(0, 0.3)
    return MSVQCodec(model=model)


def stream_pieces(
    codec, level: int, codes: list[np.ndarray], reference, first: int, arrivals, incremental=True
):
    """Pieces of a stream of ``codes`` (levels 0..level), the finest level's prefix
    growing through ``arrivals`` with the upper levels a whole top frame ahead."""
    ratios = [codec.levels[lv].hop // codec.levels[level].hop for lv in range(level)]
    decoder = StreamDecoder(codec, level, reference=reference, incremental=incremental)
    decoder.emitted = first
    n = codes[level].size
    pieces = []
    for k in [*arrivals, n]:
        upper = [c[: -(-k // r) + 1] for c, r in zip(codes, ratios, strict=False)]
        pieces.append(decoder.push(codes[level][:k], final=k == n, upper=upper))
    return pieces


@pytest.mark.parametrize("lookahead", [3, 1, 0])  # the decoder's convolutions: centred or not
@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("start", [0.0, 0.04, 0.15, 0.72])  # where the stream starts
@pytest.mark.parametrize("arrivals", [[40, 41, 90, 400, 401, 700], list(range(1, 900, 7)), []])
def test_incremental_pieces_join_into_the_whole_decode(lookahead, level, start, arrivals):
    codec = random_codec(lookahead=lookahead)
    rng = np.random.default_rng(level)
    n = [63, 250, 1000][level]  # not whole top frames: the end is padded, as in decode_levels
    sizes = [[n], [n // 4 + 1, n], [n // 16 + 1, n // 4 + 1, n]][level]
    codes = [rng.integers(0, 32, f) for f in sizes]
    first = round(start * n)
    reference = (rng.standard_normal(4000) * 0.1).astype(np.float32)
    whole = codec.decode_levels(codes, reference)
    hop = codec.levels[level].hop
    arrivals = [a for a in arrivals if a < n]
    pieces = stream_pieces(codec, level, codes, reference, first, arrivals)
    joined = np.concatenate(pieces)
    assert joined.size == whole.size - first * hop
    # float rounding only (a frame decoded before its lookahead was in is off by ~1e-5)
    assert np.abs(joined - whole[first * hop :]).max() < 1e-6 * np.abs(whole).max()
    # each piece ends on a frame whose lookahead had arrived
    ahead = codec.decode_lookahead(level)
    done = first
    for k, piece in zip(arrivals, pieces, strict=False):
        done += piece.size // hop
        assert piece.size % hop == 0 and done <= max(first, k - ahead)


@pytest.mark.parametrize("lookahead", [3, 1, 0])
def test_crops_with_the_decoders_margin_and_lookahead_are_exact(lookahead):
    """The crop path decodes each piece from the codes ``decode_margin`` before it and
    ``decode_lookahead`` after it: exact for any decoder, so both bounds are enough."""
    codec = random_codec(lookahead=lookahead)
    rng = np.random.default_rng(1)
    codes = [rng.integers(0, 32, f) for f in (64, 256)]
    whole = codec.decode_levels(codes)
    pieces = stream_pieces(codec, 1, codes, None, 0, list(range(30, 256, 23)), incremental=False)
    assert np.abs(np.concatenate(pieces) - whole).max() < 1e-6 * np.abs(whole).max()


def test_a_decoder_that_reads_fewer_frames_ahead_has_a_shorter_lookahead():
    # 3 layers + the embedding, each r frames ahead, + the inverse STFT's 2 frames
    assert [random_codec(lookahead=r).decode_lookahead(1) for r in (3, 1, 0)] == [14, 6, 2]
    # the taps it drops after a frame, it reads before: a longer margin
    assert random_codec(lookahead=1).decode_margin(1) > random_codec().decode_margin(1)


def test_the_shipped_codec_streams_as_the_crops_did_with_less_work():
    """Same pieces as the crop path (``incremental=False``), the same audio to float
    rounding, on the shipped decoder and the example prime's codes."""
    codec = TopLevels(load_codec(), 2)
    audio = load_audio(EXAMPLE_PRIME, codec.sample_rate)[: 5 * codec.sample_rate]
    codes, reference = codec.encode(audio), audio[-codec.sample_rate :]
    arrivals = list(range(80, codes[1].size, 31))
    new = stream_pieces(codec, 1, codes, reference, 40, arrivals)
    old = stream_pieces(codec, 1, codes, reference, 40, arrivals, incremental=False)
    assert [p.size for p in new] == [p.size for p in old]
    assert np.abs(np.concatenate(new) - np.concatenate(old)).max() < 1e-5


def test_a_codec_without_an_incremental_decoder_streams_from_crops(tiny_model_dir):
    codec = load_codec(tiny_model_dir)  # the VQ-VAE
    assert codec.incremental_decoder(1, 0) is None
    decoder = StreamDecoder(codec, 1)
    decoder.push(codec.encode(np.zeros(1600, np.float32))[1], final=True)
    assert decoder.incremental is False
