"""Hop arithmetic of the codec levels and chunked inference."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tokgen.codec.base import LevelSpec
from tokgen.codec.chunking import chunk_plan
from tokgen.codec.modules import Decoder, Encoder
from tokgen.codec.presets import PRESETS
from tokgen.codec.vqvae import LevelConfig, MultiLevelVQVAE, VQVAECodec, VQVAEConfig


def test_default_preset_hops_and_bitrates():
    cfg = PRESETS["default"]
    assert [lv.hop for lv in cfg.levels] == [512, 128, 32]
    codec = VQVAECodec(MultiLevelVQVAE(cfg))
    assert [lv.bitrate(16000) for lv in codec.levels] == [312.5, 1250.0, 5000.0]


def test_level_spec_frames_round_up():
    spec = LevelSpec(hop=32, codebook_size=1024)
    assert spec.frames(32) == 1 and spec.frames(33) == 2 and spec.frames(640) == 20


@pytest.mark.parametrize("strides", [[2], [4, 2], [2, 4, 4], [4, 4, 4, 8]])
def test_encoder_decoder_shapes_follow_hop(strides):
    channels = [4 * 2**i for i in range(len(strides) + 1)]
    hop = int(np.prod(strides))
    enc, dec = Encoder(strides, channels, 8), Decoder(strides, channels, 8)
    x = torch.randn(2, 1, hop * 7)
    z = enc(x)
    assert z.shape == (2, 8, 7)
    assert dec(z).shape == (2, 1, hop * 7)


def test_config_rejects_bad_hierarchies():
    top = LevelConfig(strides=[4, 4], channels=[4, 8, 16], codebook_size=16, code_dim=4)
    mid = LevelConfig(strides=[2, 4], channels=[4, 8, 16], codebook_size=16, code_dim=4)
    VQVAEConfig(levels=[top, mid])
    with pytest.raises(ValidationError, match="coarse to fine"):
        VQVAEConfig(levels=[mid, top])
    odd = LevelConfig(strides=[6], channels=[4, 8], codebook_size=16, code_dim=4)  # hop 6 does not divide 16
    with pytest.raises(ValidationError, match="multiple"):
        VQVAEConfig(levels=[top, odd])
    with pytest.raises(ValidationError, match="even"):
        LevelConfig(strides=[3], channels=[4, 8], codebook_size=16, code_dim=4)


def test_chunk_plan_covers_every_frame_once():
    plans = chunk_plan(total_frames=103, chunk_frames=10, margin_frames=4)
    covered = [f for p in plans for f in range(p.start, p.stop)]
    assert covered == list(range(103))
    assert all(p.ctx_start == max(0, p.start - 4) and p.ctx_stop == min(103, p.stop + 4) for p in plans)


def test_chunked_encode_and_decode_match_whole(tone):
    torch.manual_seed(0)
    model = MultiLevelVQVAE(PRESETS["tiny"])
    model.train()
    for lv in model.levels:  # initialise codebooks from data so codes are spread out
        lv.quantizer(lv.encoder(torch.from_numpy(tone)[None, None]))
    whole = VQVAECodec(model, chunk_seconds=100.0)
    chunked = VQVAECodec(model, chunk_seconds=0.1)
    audio = np.concatenate([tone, 0.5 * tone[::-1]])[:50001]  # not a multiple of any hop
    codes_whole, codes_chunked = whole.encode(audio), chunked.encode(audio)
    for level, (a, b) in enumerate(zip(codes_whole, codes_chunked, strict=True)):
        assert a.shape == b.shape == (whole.levels[level].frames(audio.size),)
        assert np.mean(a == b) > 0.99  # ties in argmin may flip on float noise
        y_whole, y_chunked = whole.decode(a, level), chunked.decode(a, level)
        assert y_whole.size == a.size * whole.levels[level].hop
        assert np.allclose(y_whole, y_chunked, atol=1e-4)


def test_decode_validates_codes():
    codec = VQVAECodec(MultiLevelVQVAE(PRESETS["tiny"]))
    from tokgen.errors import TokgenError

    with pytest.raises(TokgenError, match=r"lie in \[0, 31\]"):
        codec.decode(np.array([0, 40]), 0)
    with pytest.raises(TokgenError, match="shape"):
        codec.decode(np.zeros((2, 3), dtype=np.int64), 0)
    with pytest.raises(TokgenError, match="level 5 does not exist"):
        codec.decode(np.zeros(3, dtype=np.int64), 5)
    with pytest.raises(TokgenError, match="integers"):
        codec.decode(np.zeros(3, dtype=np.float32), 0)


@given(
    total=st.integers(min_value=1, max_value=5000),
    chunk=st.integers(min_value=1, max_value=700),
    margin=st.integers(min_value=0, max_value=300),
)
def test_chunk_plan_properties(total, chunk, margin):
    plans = chunk_plan(total, chunk, margin)
    assert [f for p in plans for f in range(p.start, p.stop)] == list(range(total))
    for p in plans:
        assert 0 <= p.ctx_start <= p.start < p.stop <= p.ctx_stop <= total
        assert p.stop - p.start <= chunk
        assert p.start - p.ctx_start == min(margin, p.start)
        assert p.ctx_stop - p.stop == min(margin, total - p.stop)


def test_decoder_channels_need_one_entry_per_stage():
    with pytest.raises(ValueError, match="decoder_channels"):
        LevelConfig(
            strides=[4, 4], channels=[4, 8, 16], codebook_size=16, code_dim=4, decoder_channels=[8, 16]
        )
