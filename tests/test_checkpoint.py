import json

import pytest
import torch

from tokgen.codec import load_codec
from tokgen.codec.checkpoint import load_vqvae, save_vqvae
from tokgen.codec.presets import PRESETS
from tokgen.codec.vqvae import MultiLevelVQVAE
from tokgen.errors import CheckpointError


def test_save_load_roundtrip(tmp_path):
    model = MultiLevelVQVAE(PRESETS["tiny"])
    torch.nn.init.normal_(model.levels[0].encoder.net[0].weight)
    save_vqvae(model, tmp_path)
    back = load_vqvae(tmp_path)
    for (k, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_checkpoint_not_matching_config(tmp_path):
    save_vqvae(MultiLevelVQVAE(PRESETS["tiny"]), tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["levels"][0]["codebook_size"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"does not match its config.*codebook"):
        load_codec(tmp_path)


def test_corrupt_and_missing_files(tmp_path):
    save_vqvae(MultiLevelVQVAE(PRESETS["tiny"]), tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"kind": "vqvae", "levels": []}))
    with pytest.raises(CheckpointError, match="invalid codec config"):
        load_codec(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="neither"):
        load_codec(tmp_path)
    with pytest.raises(CheckpointError, match="not found"):
        load_codec(tmp_path / "nowhere")
