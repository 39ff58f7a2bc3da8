"""``tokgen data render``: build the offline training corpus and its manifest.

Pipeline: list the ABC tunes in music21's corpus -> plan (split by piece, timbre per
render; see ``plan.py``) -> convert the needed ABC books to MIDI with abc2midi (lazily:
a small subset converts only the books it uses) -> render each job in a process pool ->
FLAC files under ``OUT/audio/<split>/`` and ``OUT/manifest.json``.
Given the same seed, hours and soundfont the output is identical.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import mido
import numpy as np
from tqdm import tqdm

from tokgen.audio import save_audio
from tokgen.data.plan import SPLITS, RenderJob, plan_renders
from tokgen.data.programs import LEAD_PROGRAMS, family_of
from tokgen.data.scores import Piece, convert_books, list_pieces
from tokgen.data.synth import (
    SoundfontRenderer,
    find_soundfont,
    first_note_sample,
    midi_duration,
    trim_and_normalise,
)
from tokgen.errors import TokgenError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class RenderOptions:
    hours: float = 5.0
    seed: int = 0
    sample_rate: int = 16000
    renders_per_piece: int = 1
    max_seconds: float = 120.0
    workers: int = 0  # 0: one per CPU core
    soundfont: str | None = None
    only_split: str | None = None  # render just this split (e.g. held-out test audio)
    paired: bool = False  # renders of a piece: same performance, other lead families (plan.py)


class _MidiCache:
    """Converts ABC books on first use and remembers each tune's MIDI path and duration."""

    def __init__(self, pieces: list[Piece], scratch: Path):
        self._by_id = {p.id: p for p in pieces}
        self._scratch = scratch
        self._midi: dict[tuple[Path, int], Path] = {}
        self._converted: set[Path] = set()

    def midi_path(self, piece_id: str) -> Path | None:
        piece = self._by_id[piece_id]
        if piece.book not in self._converted:
            out = self._scratch / f"b{len(self._converted):05d}"
            self._midi.update(convert_books([piece.book], out))
            self._converted.add(piece.book)
        return self._midi.get((piece.book, piece.number))

    def duration(self, piece_id: str) -> float | None:
        path = self.midi_path(piece_id)
        return None if path is None else midi_duration(path)


_renderer: SoundfontRenderer | None = None


def _midi_text(text: str) -> str:
    """MIDI text is read as latin-1; abc2midi copies the ABC's UTF-8 bytes, so re-decode."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return text


def _init_worker(soundfont: str, sample_rate: int) -> None:
    global _renderer
    _renderer = SoundfontRenderer(Path(soundfont), sample_rate)


def _render_one(args: tuple[RenderJob, str, str, float]) -> dict | None:
    job, midi_path, out_path, max_seconds = args
    assert _renderer is not None
    audio = _renderer.render(
        Path(midi_path),
        program=job.program,
        accompaniment_program=job.accompaniment_program,
        transpose=job.transpose,
        max_seconds=max_seconds,
    )
    start = first_note_sample(Path(midi_path), _renderer.sample_rate) if job.aligned else None
    audio = trim_and_normalise(audio, job.peak_db, start=start)
    if audio.size < _renderer.sample_rate:  # under a second of sound: nothing to learn from
        return None
    save_audio(out_path, audio, _renderer.sample_rate)
    midi = mido.MidiFile(midi_path)
    title = _midi_text(next((t.name for t in midi.tracks if t.name), ""))
    return {"duration_s": round(audio.size / _renderer.sample_rate, 3), "title": title}


def render_dataset(out_dir: Path, opts: RenderOptions) -> dict:
    """Render the corpus into ``out_dir``; returns the manifest (also written to disk)."""
    soundfont = find_soundfont(opts.soundfont)
    if not 0 < opts.hours <= 500:
        raise TokgenError(f"--hours must be in (0, 500], got {opts.hours}")
    if not 8000 <= opts.sample_rate <= 96000:
        raise TokgenError(f"--sample-rate must be in [8000, 96000] Hz, got {opts.sample_rate}")
    if not 1 <= opts.renders_per_piece <= 16:
        raise TokgenError(f"--renders-per-piece must be in [1, 16], got {opts.renders_per_piece}")
    if opts.paired and not 2 <= opts.renders_per_piece <= len(LEAD_PROGRAMS):
        raise TokgenError(
            f"--paired needs --renders-per-piece in [2, {len(LEAD_PROGRAMS)}] (one lead family each), "
            f"got {opts.renders_per_piece}"
        )
    if opts.workers < 0:
        raise TokgenError(f"--workers must be >= 0 (0: one per core), got {opts.workers}")
    out_dir.mkdir(parents=True, exist_ok=True)
    pieces = list_pieces()
    if not pieces:
        raise TokgenError("no ABC tunes found in the music21 corpus; is music21 installed?")
    midi = _MidiCache(pieces, out_dir / "midi")
    jobs = plan_renders(
        [p.id for p in pieces],
        midi.duration,
        hours=opts.hours,
        seed=opts.seed,
        renders_per_piece=opts.renders_per_piece,
        max_seconds=opts.max_seconds,
        paired=opts.paired,
    )
    if opts.only_split is not None:
        if opts.only_split not in SPLITS:
            raise TokgenError(f"unknown split {opts.only_split!r}; use one of {', '.join(SPLITS)}")
        jobs = [j for j in jobs if j.split == opts.only_split]
    tasks = [
        (
            job,
            str(midi.midi_path(job.piece_id)),
            str(out_dir / "audio" / job.split / f"{job.name}.flac"),
            opts.max_seconds,
        )
        for job in jobs
    ]
    workers = opts.workers or os.cpu_count() or 1
    items = []
    # forkserver, not fork: a fork copies the caller's threads' state without the threads (a
    # test process with gRPC and helper threads left a worker spinning in a finalizer's
    # Thread.join); the fork server is a fresh single-threaded process the workers fork from.
    with (
        mp.get_context("forkserver").Pool(workers, _init_worker, (str(soundfont), opts.sample_rate)) as pool,
        tqdm(total=len(tasks), unit="piece", desc="render", dynamic_ncols=True) as bar,
    ):
        for job, (_, _, path, _), info in zip(
            jobs, tasks, pool.imap(_render_one, tasks, chunksize=4), strict=True
        ):
            bar.update(1)
            if info is None:
                continue
            items.append(
                {
                    "path": Path(path).relative_to(out_dir).as_posix(),
                    **asdict(job),
                    "program_family": family_of(job.program),
                    "source_work": info["title"],
                    "duration_s": info["duration_s"],
                    "sample_rate": opts.sample_rate,
                }
            )
            bar.set_postfix(hours=f"{sum(i['duration_s'] for i in items) / 3600:.2f}")
    manifest = {
        "version": 1,
        "seed": opts.seed,
        "sample_rate": opts.sample_rate,
        "soundfont": soundfont.name,
        "paired": opts.paired,
        "hours": round(sum(i["duration_s"] for i in items) / 3600, 3),
        "splits": {s: sum(1 for i in items if i["split"] == s) for s in SPLITS},
        "items": items,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def load_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise TokgenError(f"no {MANIFEST} in {data_dir}: run `tokgen data render {data_dir}` first")
    return json.loads(path.read_text())


def split_files(data_dir: Path, split: str) -> list[Path]:
    """Audio files of one split, in manifest order."""
    if split not in SPLITS:
        raise TokgenError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    items = [i for i in load_manifest(data_dir)["items"] if i["split"] == split]
    if not items:
        raise TokgenError(f"split {split!r} of {data_dir} is empty; render more hours")
    return [Path(data_dir) / i["path"] for i in items]


def split_families(data_dir: Path, split: str) -> list[str]:
    """The melody instrument family of each file of a split, in ``split_files``' order."""
    items = [i for i in load_manifest(data_dir)["items"] if i["split"] == split]
    missing = [i["path"] for i in items if not i.get("program_family")]
    if missing:
        raise TokgenError(f"{data_dir}: {len(missing)} files have no program_family, e.g. {missing[0]}")
    return [str(i["program_family"]) for i in items]


def aligned_groups(data_dir: Path, split: str) -> list[list[int]]:
    """Indices (into ``split_files``' order) of the aligned renders of each piece that has
    two or more: one performance, other melody instruments (``--paired``)."""
    items = [i for i in load_manifest(data_dir)["items"] if i["split"] == split]
    groups: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        if item.get("aligned"):
            groups.setdefault(item["piece_id"], []).append(index)
    return [g for g in groups.values() if len(g) > 1]


def load_split(data_dir: Path, split: str, sample_rate: int) -> list[np.ndarray]:
    """All audio of one split as float32 arrays at ``sample_rate`` (held in memory)."""
    from tokgen.audio import load_audio

    return [load_audio(p, sample_rate) for p in split_files(data_dir, split)]
