"""The offline training corpus: symbolic scores shipped in music21, rendered through a GM soundfont."""
