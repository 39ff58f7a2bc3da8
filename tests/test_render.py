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


def test_paired_renders_share_the_sample_grid(tmp_path):
    """Two instruments playing one piece start on the same sample: each file is its raw
    render cut at the MIDI's first note (found back from the audio), not wherever that
    instrument first gets loud (a slow attack starts later)."""
    from tokgen.data.render import _MidiCache
    from tokgen.data.scores import list_pieces
    from tokgen.data.synth import SoundfontRenderer, find_soundfont, first_note_sample

    opts = RenderOptions(hours=0.01, seed=2, renders_per_piece=2, paired=True, workers=1)
    m = render_dataset(tmp_path, opts)
    assert m["paired"] is True
    by_piece: dict[str, list] = {}
    for item in m["items"]:
        by_piece.setdefault(item["piece_id"], []).append(item)
    a, b = next(g for g in by_piece.values() if len(g) == 2)
    assert a["program_family"] != b["program_family"] and a["transpose"] == b["transpose"]
    midi = _MidiCache(list_pieces(), tmp_path / "midi-again").midi_path(a["piece_id"])
    renderer = SoundfontRenderer(find_soundfont(), 16000)
    cuts = []
    for item in (a, b):
        raw = renderer.render(
            midi,
            program=item["program"],
            accompaniment_program=item["accompaniment_program"],
            transpose=item["transpose"],
            max_seconds=120.0,
        )
        head, _ = sf.read(tmp_path / item["path"], dtype="float32", frames=4000)
        # where in the raw render the file's first 0.25 s sits (normalised correlation)
        scores = [
            float(np.dot(raw[k : k + 4000], head)) / (np.linalg.norm(raw[k : k + 4000]) + 1e-9)
            for k in range(0, 16000 * 3)
        ]
        cuts.append(int(np.argmax(scores)))
    assert cuts[0] == cuts[1] == first_note_sample(midi, 16000), cuts
