"""Window: rolling context in onset order, and the rule that feeds the model in onset order."""

from __future__ import annotations

import numpy as np
import pytest

from livegen import midi_bytes as mb
from livegen.engine.assembler import NoteAssembler, NoteCompleted, NoteStarted
from livegen.engine.window import Row, Window
from livegen.notes import Note


def play(window: Window, assembler: NoteAssembler, message: list[int], t: float) -> None:
    for event in assembler.feed(message, t):
        window.on_event(event)


def test_rows_in_onset_order_with_steps():
    w = Window(8)
    a = NoteAssembler()
    play(w, a, mb.note_on(0, 60, 80), 0.0)
    play(w, a, mb.note_on(0, 64, 90), 0.5)
    play(w, a, mb.note_off(0, 64), 0.75)  # completes first
    play(w, a, mb.note_off(0, 60), 1.0)
    assert w.notes() == [Note(60, 0.0, 1.0, 80), Note(64, 0.5, 0.75, 90)]
    np.testing.assert_allclose(w.rows(), [[60, 0.0, 1.0, 80], [64, 0.5, 0.25, 90]])


def test_held_note_blocks_later_completed_notes_until_it_ends():
    w = Window(8)
    a = NoteAssembler()
    play(w, a, mb.note_on(0, 36, 70), 0.0)  # bass held
    play(w, a, mb.note_on(0, 60, 80), 0.5)
    play(w, a, mb.note_off(0, 60), 0.7)
    play(w, a, mb.note_on(0, 62, 80), 1.0)
    play(w, a, mb.note_off(0, 62), 1.2)
    assert w.pending_for_model() == []  # the bass started first and is still held
    assert w.waiting == 2
    play(w, a, mb.note_off(0, 36), 1.5)
    rows = w.pending_for_model()
    assert rows == [Row(36, 0.0, 1.5, 70), Row(60, 0.5, pytest.approx(0.2), 80), Row(62, 0.5, pytest.approx(0.2), 80)]
    assert w.pending_for_model() == []  # each note once


def test_notes_before_a_held_note_are_fed_at_once():
    w = Window(8)
    a = NoteAssembler()
    play(w, a, mb.note_on(0, 60, 80), 0.0)
    play(w, a, mb.note_off(0, 60), 0.2)
    play(w, a, mb.note_on(0, 62, 80), 0.5)  # held
    assert w.pending_for_model() == [Row(60, 0.0, 0.2, 80)]
    play(w, a, mb.note_off(0, 62), 0.9)
    assert w.pending_for_model() == [Row(62, 0.5, pytest.approx(0.4), 80)]


def test_steps_continue_across_calls_and_chords_lowest_pitch_first():
    w = Window(8)
    a = NoteAssembler()
    play(w, a, mb.note_on(0, 67, 80), 0.0)
    play(w, a, mb.note_on(0, 60, 80), 0.0)
    play(w, a, mb.note_off(0, 67), 0.1)  # upper chord note released first, lower still held
    assert w.pending_for_model() == []  # 60 sorts first within the chord and is held
    play(w, a, mb.note_off(0, 60), 0.3)
    assert [r.pitch for r in w.pending_for_model()] == [60, 67]
    play(w, a, mb.note_on(0, 72, 80), 1.0)
    play(w, a, mb.note_off(0, 72), 1.1)
    assert w.pending_for_model() == [Row(72, 1.0, pytest.approx(0.1), 80)]


def test_sustained_notes_are_fed_after_pedal_up():
    w = Window(8)
    a = NoteAssembler()
    play(w, a, mb.control_change(0, mb.CC_SUSTAIN, 127), 0.0)
    play(w, a, mb.note_on(0, 60, 80), 0.1)
    play(w, a, mb.note_off(0, 60), 0.2)
    assert w.pending_for_model() == []
    play(w, a, mb.control_change(0, mb.CC_SUSTAIN, 0), 1.0)
    assert w.pending_for_model() == [Row(60, 0.0, pytest.approx(0.9), 80)]


def test_rolling_window_keeps_last_n_by_onset():
    w = Window(3)
    for i in range(5):
        w.note_completed(Note(60 + i, float(i), i + 0.5, 80))
    assert [n.pitch for n in w.notes()] == [62, 63, 64]
    assert len(w) == 3
    assert [r.pitch for r in w.pending_for_model()] == [60, 61, 62, 63, 64]  # none lost to eviction


def test_long_held_note_is_fed_early_when_too_much_waits_behind_it():
    w = Window(16, max_pending=2)
    w.on_event(NoteStarted(36, 70, 0, 0.0))
    for i in range(3):
        w.on_event(NoteStarted(60 + i, 80, 0, 1.0 + i))
        w.on_event(NoteCompleted(Note(60 + i, 1.0 + i, 1.5 + i, 80), 0))
    rows = w.pending_for_model()
    assert rows[0] == Row(36, 0.0, 3.5, 70)  # duration so far: up to the latest event
    assert [r.pitch for r in rows] == [36, 60, 61, 62]
    w.on_event(NoteCompleted(Note(36, 0.0, 9.0, 70), 0))
    assert w.pending_for_model() == []  # not fed twice
    assert Note(36, 0.0, 9.0, 70) in w.notes()  # but kept with its true duration


def test_clear_forgets_notes_but_keeps_held_keys():
    w = Window(8)
    w.note_completed(Note(60, 0.0, 0.5, 80))
    w.on_event(NoteStarted(62, 80, 0, 1.0))
    w.clear()
    assert w.notes() == [] and w.waiting == 0 and w.held == 1
    w.on_event(NoteCompleted(Note(62, 1.0, 1.2, 80), 0))
    assert w.pending_for_model() == [Row(62, 0.0, pytest.approx(0.2), 80)]  # step restarts at 0


def test_set_previous_onset_measures_next_step_from_there():
    w = Window(8)
    w.set_previous_onset(4.0)
    w.note_completed(Note(60, 5.0, 5.5, 80))
    assert w.pending_for_model() == [Row(60, 1.0, 0.5, 80)]


def test_other_events_are_ignored_and_size_validated():
    w = Window(2)
    for event in NoteAssembler().feed([mb.TIMING_CLOCK], 0.0):
        w.on_event(event)
    assert w.notes() == [] and w.rows().shape == (0, 4)
    with pytest.raises(ValueError):
        Window(0)
