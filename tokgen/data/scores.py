"""Symbolic scores that ship inside the music21 package, converted to MIDI with abc2midi.

The ABC books of the music21 corpus (Essen folk songs, O'Neill's and Ryan's Mammoth
collections, Nottingham reels, ...) hold about 12,700 tunes (~108 h at their notated
tempi). Debian's ``abc2midi`` converts a whole book in milliseconds, while music21's own
ABC parser is slow and fails on many tunes, so conversion goes through abc2midi.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tokgen.errors import TokgenError

_X_FIELD = re.compile(r"^X:\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Piece:
    """One tune of an ABC book; ``id`` is stable across machines (corpus-relative)."""

    id: str  # e.g. "essenFolksong/altdeu10.abc#12"
    book: Path
    number: int  # the tune's X: reference number


def music21_corpus_dir() -> Path:
    import music21

    return Path(music21.__file__).parent / "corpus"


def list_pieces(corpus_dir: Path | None = None) -> list[Piece]:
    """All tunes of all ABC books in the corpus, sorted by id (deterministic)."""
    root = corpus_dir or music21_corpus_dir()
    pieces: list[Piece] = []
    for book in sorted(root.rglob("*.abc")):
        rel = book.relative_to(root).as_posix()
        numbers = sorted({int(n) for n in _X_FIELD.findall(book.read_text(errors="replace"))})
        pieces.extend(Piece(f"{rel}#{n}", book, n) for n in numbers)
    return sorted(pieces, key=lambda p: p.id)


def abc2midi_path() -> str:
    exe = shutil.which("abc2midi")
    if exe is None:
        raise TokgenError(
            "abc2midi not found: install the Debian package 'abcmidi' (scripts/install.sh does)"
        )
    return exe


def convert_books(books: list[Path], out_dir: Path) -> dict[tuple[Path, int], Path]:
    """Convert ABC books to one MIDI file per tune; returns {(book, X number): midi path}.

    abc2midi writes ``<stem><X>.mid`` next to its input, so each book is copied into its own
    scratch folder under ``out_dir`` first (the installed corpus is never written to).
    Tunes abc2midi cannot convert are simply absent from the result.
    """
    exe = abc2midi_path()
    result: dict[tuple[Path, int], Path] = {}
    for i, book in enumerate(sorted(set(books))):
        work = out_dir / f"book{i:04d}"
        work.mkdir(parents=True, exist_ok=True)
        local = work / book.name
        shutil.copyfile(book, local)
        subprocess.run(
            [exe, local.name, "-silent", "-quiet"],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        stem = local.stem
        for midi in work.glob(f"{stem}*.mid"):
            number = midi.stem[len(stem) :]
            if number.isdigit():
                result[(book, int(number))] = midi
    return result
