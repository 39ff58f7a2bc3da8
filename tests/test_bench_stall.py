"""The listener's view of a stream in `tokgen bench serve`: silence after playback starts."""

import pytest

from tokgen.bench.serve import stalled_seconds


def test_a_stream_that_stays_ahead_never_stalls():
    # 0.5 s of audio at 1.0 s, then 0.5 s pieces every 0.4 s: always ahead of playback
    assert stalled_seconds([(1.0, 0.5), (1.4, 0.5), (1.8, 0.5), (2.2, 0.5)]) == 0.0
    assert stalled_seconds([]) == 0.0


def test_gaps_after_the_first_piece_add_up():
    # a 48 ms first piece, the next at +0.5 s (0.452 s of silence), then one 0.2 s late
    arrivals = [(0.4, 0.048), (0.9, 1.0), (2.1, 0.5)]
    assert stalled_seconds(arrivals) == pytest.approx(0.452 + 0.2)


def test_time_to_first_audio_is_not_a_stall():
    assert stalled_seconds([(5.0, 1.0), (6.0, 1.0)]) == 0.0
