"""PhraseDetector: gap after release, held keys and pedal, max listen, end call, adaptive gap."""

from __future__ import annotations

import pytest

from livegen import midi_bytes as mb
from livegen.engine.assembler import NoteAssembler
from livegen.engine.phrase import PhraseDetector, PhraseEnd


class Player:
    """Feeds raw messages through a real assembler into the detector, like the engine thread."""

    def __init__(self, detector: PhraseDetector) -> None:
        self.assembler = NoteAssembler()
        self.detector = detector

    def send(self, message: list[int], t: float) -> None:
        for event in self.assembler.feed(message, t):
            self.detector.on_event(event)

    def note(self, pitch: int, on: float, off: float) -> None:
        self.send(mb.note_on(0, pitch, 80), on)
        self.send(mb.note_off(0, pitch), off)


def test_gap_counts_from_last_release():
    p = Player(PhraseDetector(gap_s=0.5))
    p.note(60, 0.0, 0.2)
    p.note(62, 0.3, 0.6)
    assert p.detector.next_deadline() == pytest.approx(1.1)
    assert p.detector.poll(1.09) is None
    assert p.detector.poll(1.2) == PhraseEnd(pytest.approx(1.1), "gap", 2)
    assert p.detector.poll(5.0) is None  # a phrase triggers once
    assert p.detector.next_deadline() is None


def test_held_key_blocks_the_gap_however_long():
    p = Player(PhraseDetector(gap_s=0.5))
    p.note(60, 0.0, 0.1)
    p.send(mb.note_on(0, 48, 80), 0.2)
    assert p.detector.held and p.detector.next_deadline() is None
    assert p.detector.poll(10.0) is None
    p.send(mb.note_off(0, 48), 10.0)
    assert p.detector.poll(10.5) == PhraseEnd(10.5, "gap", 2)


def test_sustain_pedal_holds_the_phrase_open_and_gap_counts_from_pedal_up():
    p = Player(PhraseDetector(gap_s=0.5))
    p.send(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.0)
    p.note(60, 0.1, 0.2)
    assert p.detector.poll(3.0) is None
    p.send(mb.control_change(0, mb.CC_SUSTAIN, 0), 3.0)
    assert p.detector.next_deadline() == 3.5
    assert p.detector.poll(3.5) == PhraseEnd(3.5, "gap", 1)


def test_pedal_up_later_than_last_release_restarts_the_gap():
    p = Player(PhraseDetector(gap_s=0.5))
    p.note(60, 0.0, 0.1)
    p.send(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.2)
    p.send(mb.control_change(0, mb.CC_SUSTAIN, 0), 0.4)
    assert p.detector.poll(0.65) is None
    assert p.detector.poll(0.9) == PhraseEnd(0.9, "gap", 1)


def test_active_sensing_and_clock_neither_delay_nor_trigger():
    p = Player(PhraseDetector(gap_s=1.0))
    t = 0.0
    while t < 3.0:  # active sensing every 300 ms, clock at 24 ppq / 120 bpm, no notes
        p.send([mb.ACTIVE_SENSING], t)
        p.send([mb.TIMING_CLOCK], t + 0.01)
        assert p.detector.poll(t + 0.02) is None
        t += 0.3
    p.note(60, 3.0, 3.2)
    t = 3.2
    while t < 4.2:
        p.send([mb.ACTIVE_SENSING], t)
        p.send([mb.TIMING_CLOCK], t)
        t += 0.3
    assert p.detector.next_deadline() == pytest.approx(4.2)
    assert p.detector.poll(4.2) == PhraseEnd(pytest.approx(4.2), "gap", 1)


def test_min_notes():
    p = Player(PhraseDetector(gap_s=0.5, min_notes=3))
    p.note(60, 0.0, 0.1)
    p.note(62, 0.2, 0.3)
    assert p.detector.next_deadline() is None and p.detector.poll(5.0) is None
    p.note(64, 5.0, 5.1)
    assert p.detector.poll(6.0) == PhraseEnd(pytest.approx(5.6), "gap", 3)


def test_max_listen_from_first_onset_even_while_held():
    p = Player(PhraseDetector(gap_s=0.5, max_listen_s=4.0))
    p.send(mb.note_on(0, 60, 80), 1.0)
    assert p.detector.next_deadline() == 5.0
    assert p.detector.poll(4.9) is None
    assert p.detector.poll(5.0) == PhraseEnd(5.0, "max_listen", 1)
    # the key still held after the trigger starts no new phrase by itself
    p.send(mb.note_off(0, 60), 6.0)
    assert p.detector.poll(9.0) is None
    p.note(62, 9.0, 9.1)
    assert p.detector.poll(9.6) == PhraseEnd(pytest.approx(9.6), "gap", 1)


def test_max_listen_waits_for_min_notes():
    p = Player(PhraseDetector(gap_s=10.0, max_listen_s=1.0, min_notes=2))
    p.send(mb.note_on(0, 60, 80), 0.0)
    assert p.detector.poll(3.0) is None
    p.send(mb.note_on(0, 62, 80), 3.0)
    assert p.detector.poll(3.0) == PhraseEnd(3.0, "max_listen", 2)


def test_end_call_cc_triggers_at_once_on_the_rising_edge():
    p = Player(PhraseDetector(gap_s=0.5, end_call_cc=mb.CC_SOSTENUTO))
    p.send(mb.note_on(0, 60, 80), 0.0)
    p.send(mb.control_change(0, mb.CC_SOSTENUTO, 127), 0.3)
    assert p.detector.next_deadline() == 0.3
    assert p.detector.poll(0.31) == PhraseEnd(0.3, "end_call", 1)
    p.send(mb.control_change(0, mb.CC_SOSTENUTO, 120), 0.4)  # still high: no retrigger
    assert p.detector.poll(0.5) is None
    p.send(mb.control_change(0, mb.CC_SOSTENUTO, 0), 0.6)
    p.send(mb.control_change(0, mb.CC_SOSTENUTO, 64), 0.7)
    assert p.detector.poll(0.7) == PhraseEnd(0.7, "end_call", 0)


def test_other_controllers_do_not_end_call():
    p = Player(PhraseDetector(gap_s=0.5, end_call_cc=80))
    p.send(mb.note_on(0, 60, 80), 0.0)
    p.send(mb.control_change(0, mb.CC_MODULATION, 127), 0.1)
    assert p.detector.poll(1.0) is None


def test_earliest_due_trigger_wins():
    p = Player(PhraseDetector(gap_s=0.5, max_listen_s=1.0))
    p.note(60, 0.0, 0.6)  # gap due 1.1, max listen due 1.0
    assert p.detector.poll(2.0) == PhraseEnd(1.0, "max_listen", 1)


def test_adaptive_gap_follows_the_players_pace():
    fast = Player(PhraseDetector(gap_s=1.0, adaptive=True, adaptive_k=2.0, adaptive_min_s=0.2, adaptive_max_s=2.0))
    for i in range(5):  # 0.15 s apart
        fast.note(60 + i, i * 0.15, i * 0.15 + 0.1)
    assert fast.detector.gap == pytest.approx(0.3)
    assert fast.detector.next_deadline() == pytest.approx(0.7 + 0.3)

    slow = Player(PhraseDetector(gap_s=1.0, adaptive=True, adaptive_k=2.0, adaptive_min_s=0.2, adaptive_max_s=2.0))
    for i in range(5):  # 1.5 s apart: clamped at the maximum
        slow.note(60 + i, i * 1.5, i * 1.5 + 0.1)
    assert slow.detector.gap == 2.0


def test_adaptive_gap_ignores_chords_and_needs_enough_intervals():
    p = Player(PhraseDetector(gap_s=1.0, adaptive=True, adaptive_k=2.0))
    for onset in (0.0, 0.4):  # two three-note chords: one real interval
        for pitch in (60, 64, 67):
            p.note(pitch, onset, onset + 0.2)
    assert p.detector.gap == 1.0
    for onset in (0.8, 1.2):
        for pitch in (60, 64, 67):
            p.note(pitch, onset, onset + 0.2)
    assert p.detector.gap == pytest.approx(0.8)  # median interval 0.4, not 0


def test_reset_starts_a_new_phrase():
    p = Player(PhraseDetector(gap_s=0.5))
    p.note(60, 0.0, 0.1)
    p.detector.reset()
    assert p.detector.notes == 0 and p.detector.poll(5.0) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gap_s": 0},
        {"gap_s": 0.5, "min_notes": 0},
        {"gap_s": 0.5, "max_listen_s": 0},
        {"gap_s": 0.5, "end_call_cc": 64},
        {"gap_s": 0.5, "end_call_cc": 128},
        {"gap_s": 0.5, "adaptive_min_s": 2.0, "adaptive_max_s": 1.0},
    ],
)
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        PhraseDetector(**kwargs)
