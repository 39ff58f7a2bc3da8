"""Render one MIDI file to mono audio through a General MIDI soundfont (tinysoundfont).

tinysoundfont is a small C synthesiser on PyPI that renders ~1000x faster than real time
on one core here; events are fed from mido so that each channel's program is ours to set
(the timbre of a render is part of its label) and notes can be transposed.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np

from tokgen.errors import TokgenError

DRUM_CHANNEL = 9
SOUNDFONT_CANDIDATES = (
    Path("/usr/share/sounds/sf2/FluidR3_GM.sf2"),
    Path("/usr/share/sounds/sf2/TimGM6mb.sf2"),
    Path("/usr/share/sounds/sf2/default-GM.sf2"),
)
_TAIL_SECONDS = 1.0  # let the last notes ring out


def find_soundfont(path: str | Path | None = None) -> Path:
    if path is not None:
        if not Path(path).is_file():
            raise TokgenError(f"soundfont not found: {path}")
        return Path(path)
    for candidate in SOUNDFONT_CANDIDATES:
        if candidate.is_file():
            return candidate
    raise TokgenError(
        "no General MIDI soundfont found: install the Debian package 'fluid-soundfont-gm' "
        "(scripts/install.sh does) or pass --soundfont PATH"
    )


def midi_duration(path: Path) -> float | None:
    """Length of a MIDI file in seconds, or None if mido cannot parse it."""
    try:
        return float(mido.MidiFile(str(path)).length)
    except (OSError, ValueError, EOFError, KeyError, IndexError):
        return None


class SoundfontRenderer:
    """Keeps one loaded soundfont (loading FluidR3 takes ~1 s) and renders MIDI files."""

    def __init__(self, soundfont: Path, sample_rate: int):
        import tinysoundfont

        self.sample_rate = sample_rate
        self._synth = tinysoundfont.Synth(samplerate=sample_rate)
        self._sfid = self._synth.sfload(str(soundfont))

    def render(
        self,
        midi_path: Path,
        *,
        program: int,
        accompaniment_program: int,
        transpose: int,
        max_seconds: float,
    ) -> np.ndarray:
        """Render ``midi_path``: channel 0 (abc2midi's melody) gets ``program``, other
        non-drum channels ``accompaniment_program``; program changes in the file are ignored."""
        synth, sfid = self._synth, self._sfid
        # Reset voices and controllers so that nothing leaks from the previous render.
        synth.sounds_off()
        for chan in range(16):
            synth.control_change(chan, 121, 0)  # reset all controllers ...
            synth.control_change(chan, 7, 100)  # ... which by the MIDI spec keeps volume,
            synth.control_change(chan, 10, 64)  # pan
            synth.control_change(chan, 91, 0)  # and reverb/chorus sends
            synth.control_change(chan, 93, 0)
            synth.pitchbend(chan, 8192)
            if chan == DRUM_CHANNEL:
                synth.program_select(chan, sfid, 128, 0, is_drums=True)
            else:
                synth.program_select(chan, sfid, 0, program if chan == 0 else accompaniment_program)
        limit = int(max_seconds * self.sample_rate)
        chunks: list[np.ndarray] = []
        clock = 0.0
        written = 0
        for msg in mido.MidiFile(str(midi_path)):
            clock += msg.time
            due = min(round(clock * self.sample_rate), limit) - written
            if due > 0:
                chunks.append(np.frombuffer(synth.generate(due), dtype=np.float32).copy())
                written += due
            if written >= limit:
                break
            if msg.type == "note_on" and msg.velocity > 0:
                note = msg.note + (0 if msg.channel == DRUM_CHANNEL else transpose)
                if 0 <= note < 128:
                    synth.noteon(msg.channel, note, msg.velocity)
            elif msg.type in ("note_off", "note_on"):
                note = msg.note + (0 if msg.channel == DRUM_CHANNEL else transpose)
                if 0 <= note < 128:
                    synth.noteoff(msg.channel, note)
            elif msg.type == "control_change":
                synth.control_change(msg.channel, msg.control, msg.value)
            elif msg.type == "pitchwheel":
                synth.pitchbend(msg.channel, msg.pitch + 8192)
        tail = min(int(_TAIL_SECONDS * self.sample_rate), max(limit - written, 0))
        if tail:
            chunks.append(np.frombuffer(synth.generate(tail), dtype=np.float32).copy())
        if not chunks:
            return np.zeros(0, dtype=np.float32)
        stereo = np.concatenate(chunks).reshape(-1, 2)
        return stereo.mean(axis=1)


def first_note_sample(path: Path, sample_rate: int) -> int | None:
    """Sample index of the first sounding note-on of a MIDI file (None: no notes): where a
    render starts whatever instrument plays it."""
    clock = 0.0
    for msg in mido.MidiFile(str(path)):
        clock += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            return round(clock * sample_rate)
    return None


def trim_and_normalise(
    audio: np.ndarray, peak_db: float, threshold_db: float = -60.0, start: int | None = None
) -> np.ndarray:
    """Cut leading/trailing near-silence and scale to the given peak level. ``start``: cut
    the beginning there instead (the same sample for every instrument; see
    ``first_note_sample``), not where this render first gets loud."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0.0:
        return audio[:0]
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (threshold_db / 20))
    first = loud[0] if start is None else min(start, audio.size)
    audio = audio[first : max(first, loud[-1] + 1)]
    return (audio * (10 ** (peak_db / 20) / peak)).astype(np.float32)
