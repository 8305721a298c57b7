"""The latency harness against a fake daemon with a known 50 ms delay, through real JACK.

The fake (tests/bench/fake_daemon.py) answers each phrase end exactly 50 ms late and ends its
note 10 ms after a barge-in; the harness must say 50 ± 3 ms and 10 ± 4 ms (JACK delivery adds ~1-3 ms with 64-frame periods).  Few phrases keep it quick.
"""

import sys
from pathlib import Path

import pytest

from livegen.bench.latency import LatencyConfig, cut_phrases, load_phrases, run_session
from livegen.notes import Note

FAKE_DAEMON = [sys.executable, str(Path(__file__).with_name("fake_daemon.py"))]


@pytest.fixture
def short_phrases():
    return load_phrases(6)


def test_harness_measures_a_known_50_ms_delay(jack_server, short_phrases, tmp_path):
    config = LatencyConfig(phrases=len(short_phrases), gap_ms=150, length=3, max_seconds=1.0, barge_ins=3)
    result = run_session(jack_server, FAKE_DAEMON, short_phrases, config, tmp_path)
    assert result["answered"] == len(short_phrases) and result["missed"] == 0
    assert result["response_ms"]["median"] == pytest.approx(50.0, abs=3.0)
    # the fake ends its sounding note 10 ms after a key comes down (its note would last 30 ms);
    # the press and the note-off each cross JACK once (~1.3 ms a period)
    assert result["barge_ins"] == {"tried": 3, "measured": 3, "nothing_sounding": 0}
    assert result["barge_in_ms"]["median"] == pytest.approx(10.0, abs=4.0)
    # every answer note was logged and matched to its arrival; arrival - intended is delivery only
    assert result["note_ons"]["logged"] == result["note_ons"]["matched"] == 3 * len(short_phrases) + (1 + 3) * 3  # + barge-ins
    assert 0.0 <= result["timing_ms"]["median"] <= 5.0
    assert result["daemon"]["exit_code"] == 0
    assert result["ports"] == {"in": "livegen:in", "out": "livegen-01:out"}


def test_harness_with_flood_still_measures_the_delay(jack_server, tmp_path):
    phrases = load_phrases(5)
    config = LatencyConfig(phrases=5, gap_ms=150, length=2, max_seconds=1.0, flood_rate=2000, barge_ins=0)
    result = run_session(jack_server, FAKE_DAEMON, phrases, config, tmp_path)
    assert result["answered"] == 5
    assert result["response_ms"]["median"] == pytest.approx(50.0, abs=5.0)
    assert result["flood"].startswith("sent ")


def test_phrases_are_cut_short_from_real_files():
    notes = [Note(60 + i % 12, i * 0.5, i * 0.5 + 0.4, 90) for i in range(40)]
    phrases = cut_phrases([notes], 12)
    assert len(phrases) == 12
    for phrase in phrases:
        assert 3 <= len(phrase) <= 6
        assert sum(hold + rest for _, _, hold, rest in phrase) < 1.0
        assert all(0 <= pitch <= 127 and 1 <= velocity <= 127 for pitch, velocity, _, _ in phrase)
    assert len(load_phrases(60)) == 60  # the shipped demo phrase and music21's MIDI files suffice
