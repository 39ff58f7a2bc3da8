"""The real corpus renderer: abc2midi + tinysoundfont over music21's ABC books."""

import json

import numpy as np
import soundfile as sf

from tokgen.data.render import RenderOptions, load_manifest, render_dataset


def test_render_manifest_and_files(corpus):
    manifest = load_manifest(corpus)
    items = manifest["items"]
    assert manifest["sample_rate"] == 16000 and manifest["hours"] >= 0.05
    assert {i["split"] for i in items} == {"train", "valid", "test"}
    pieces_by_split = {
        s: {i["piece_id"] for i in items if i["split"] == s} for s in ("train", "valid", "test")
    }
    assert not (pieces_by_split["train"] & (pieces_by_split["valid"] | pieces_by_split["test"]))
    for item in items:
        info = sf.info(corpus / item["path"])
        assert info.samplerate == 16000 and info.channels == 1
        assert abs(info.frames / 16000 - item["duration_s"]) < 0.01
        assert item["program_family"] and item["source_work"] is not None
        audio, _ = sf.read(corpus / item["path"])
        peak_db = 20 * np.log10(np.max(np.abs(audio)))
        assert abs(peak_db - item["peak_db"]) < 0.2


def test_render_is_deterministic_across_worker_counts(tmp_path):
    a = render_dataset(tmp_path / "a", RenderOptions(hours=0.02, seed=5, workers=1))
    b = render_dataset(tmp_path / "b", RenderOptions(hours=0.02, seed=5, workers=2))
    assert json.dumps(a["items"]) == json.dumps(b["items"])
    for item in a["items"]:
        assert (tmp_path / "a" / item["path"]).read_bytes() == (tmp_path / "b" / item["path"]).read_bytes()


def test_only_split(tmp_path):
    m = render_dataset(tmp_path, RenderOptions(hours=0.3, seed=0, only_split="test"))
    assert m["items"] and {i["split"] for i in m["items"]} == {"test"}
