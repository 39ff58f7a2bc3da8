"""The EnCodec adapter, with a randomly initialised model saved to and loaded from disk."""

import numpy as np
import pytest
import torch
from transformers import EncodecConfig, EncodecModel

from tokgen.codec import load_codec
from tokgen.codec.encodec import EncodecCodec
from tokgen.errors import CheckpointError


@pytest.fixture(scope="module")
def encodec_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = EncodecConfig(
        sampling_rate=16000,
        audio_channels=1,
        normalize=False,
        num_filters=4,
        hidden_size=16,
        codebook_dim=16,
        codebook_size=64,
        upsampling_ratios=[8, 4],
        num_lstm_layers=1,
        target_bandwidths=[3.0, 6.0, 12.0],
    )
    out = tmp_path_factory.mktemp("encodec")
    EncodecModel(cfg).save_pretrained(out)
    return out


def test_levels_are_cumulative_codebook_groups(encodec_dir, tone):
    codec = load_codec(encodec_dir)
    assert isinstance(codec, EncodecCodec)
    # 500 frames/s of 6-bit codes: 3 kbps per codebook -> 1, 2, 4 codebooks.
    assert [(lv.hop, lv.n_codebooks, lv.codebook_size) for lv in codec.levels] == [
        (32, 1, 64),
        (32, 2, 64),
        (32, 4, 64),
    ]
    codes = codec.encode(tone[:16000])
    assert [c.shape for c in codes] == [(500,), (2, 500), (4, 500)]  # one codebook: 1-D, as in the VQ-VAE
    assert np.array_equal(codes[2][:2], codes[1]) and np.array_equal(codes[1][0], codes[0])
    for level, c in enumerate(codes):
        audio = codec.decode(c, level)
        assert audio.shape == (16000,) and np.all(np.isfinite(audio))


def test_chunked_encoding_matches_whole(encodec_dir, tone):
    whole = load_codec(encodec_dir)
    chunked = EncodecCodec(whole.model, chunk_seconds=0.5)  # type: ignore[attr-defined]
    a, b = whole.encode(tone), chunked.encode(tone)
    assert np.mean(a[2] == b[2]) > 0.95


def test_missing_checkpoint_fails_without_network(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "encodec"}')
    with pytest.raises(CheckpointError, match="cannot load EnCodec checkpoint"):
        load_codec(tmp_path)


def test_normalized_models_are_refused(encodec_dir, tmp_path):
    model = EncodecModel.from_pretrained(encodec_dir)
    model.config.normalize = True
    with pytest.raises(CheckpointError, match="normalize"):
        EncodecCodec(model)
