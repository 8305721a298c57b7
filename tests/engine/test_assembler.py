"""NoteAssembler: pairing, sustain, re-strike, filters, and garbage that must never raise."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from livegen import midi_bytes as mb
from livegen.engine.assembler import (
    ClockContinue,
    ClockStart,
    ClockStop,
    ClockTick,
    ControlChanged,
    NoteAssembler,
    NoteCompleted,
    NoteStarted,
    PedalChanged,
    ProgramChanged,
)
from livegen.notes import Note


def completed(events) -> list[Note]:
    return [e.note for e in events if isinstance(e, NoteCompleted)]


def test_note_on_off_pair_into_one_note():
    a = NoteAssembler()
    started = a.feed(mb.note_on(0, 60, 100), 1.0)
    assert started == [NoteStarted(60, 100, 0, 1.0)]
    assert a.keys_down == {(0, 60)}
    events = a.feed(mb.note_off(0, 60), 1.5)
    assert events == [NoteCompleted(Note(60, 1.0, 1.5, 100), 0)]
    assert events[0].t == 1.5
    assert not a.keys_down and not a.sounding


def test_velocity_zero_note_on_is_note_off():
    a = NoteAssembler()
    a.feed([mb.NOTE_ON | 3, 64, 90], 0.0)
    assert completed(a.feed([mb.NOTE_ON | 3, 64, 0], 0.25)) == [Note(64, 0.0, 0.25, 90)]
    assert a.feed([mb.NOTE_ON | 3, 64, 0], 0.3) == []  # a second off is ignored


def test_overlapping_notes_complete_in_release_order():
    a = NoteAssembler()
    a.feed(mb.note_on(0, 48, 70), 0.0)
    a.feed(mb.note_on(0, 60, 80), 0.1)
    a.feed(mb.note_on(0, 64, 80), 0.1)
    assert completed(a.feed(mb.note_off(0, 64), 0.2)) == [Note(64, 0.1, 0.2, 80)]
    assert completed(a.feed(mb.note_off(0, 60), 0.3)) == [Note(60, 0.1, 0.3, 80)]
    assert completed(a.feed(mb.note_off(0, 48), 0.4)) == [Note(48, 0.0, 0.4, 70)]


def test_restrike_of_held_pitch_completes_the_old_note_first():
    a = NoteAssembler()
    a.feed(mb.note_on(0, 60, 80), 0.0)
    events = a.feed(mb.note_on(0, 60, 90), 0.5)
    assert events == [NoteCompleted(Note(60, 0.0, 0.5, 80), 0), NoteStarted(60, 90, 0, 0.5)]
    assert completed(a.feed(mb.note_off(0, 60), 0.7)) == [Note(60, 0.5, 0.7, 90)]
    assert not a.sounding


def test_sustain_extends_released_notes_to_pedal_up():
    a = NoteAssembler()
    assert a.feed(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.0) == [
        ControlChanged(0, mb.CC_SUSTAIN, 127, 0.0),
        PedalChanged(True, 0, 0.0),
    ]
    a.feed(mb.note_on(0, 60, 80), 0.1)
    a.feed(mb.note_on(0, 67, 80), 0.2)
    assert a.feed(mb.note_off(0, 60), 0.3) == []  # still sounding through the pedal
    assert a.feed(mb.note_off(0, 67), 0.4) == []
    assert a.pedal_down and not a.keys_down and a.sounding == {(0, 60), (0, 67)}
    a.feed(mb.control_change(0, mb.CC_SUSTAIN, 100), 0.5)  # still down: no new event
    events = a.feed(mb.control_change(0, mb.CC_SUSTAIN, 0), 2.0)
    assert events[:2] == [ControlChanged(0, mb.CC_SUSTAIN, 0, 2.0), PedalChanged(False, 0, 2.0)]
    assert completed(events) == [Note(60, 0.1, 2.0, 80), Note(67, 0.2, 2.0, 80)]
    assert not a.sounding and not a.pedal_down


def test_key_held_through_pedal_up_completes_at_its_own_release():
    a = NoteAssembler()
    a.feed(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.0)
    a.feed(mb.note_on(0, 60, 80), 0.1)
    assert completed(a.feed(mb.control_change(0, mb.CC_SUSTAIN, 0), 0.5)) == []
    assert completed(a.feed(mb.note_off(0, 60), 0.9)) == [Note(60, 0.1, 0.9, 80)]


def test_pedal_pressed_after_release_does_not_revive_notes():
    a = NoteAssembler()
    a.feed(mb.note_on(0, 60, 80), 0.0)
    assert completed(a.feed(mb.note_off(0, 60), 0.2)) == [Note(60, 0.0, 0.2, 80)]
    a.feed(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.3)
    assert completed(a.feed(mb.control_change(0, mb.CC_SUSTAIN, 0), 1.0)) == []


def test_restrike_of_sustained_pitch_ends_it_at_the_restrike():
    a = NoteAssembler()
    a.feed(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.0)
    a.feed(mb.note_on(0, 60, 80), 0.1)
    a.feed(mb.note_off(0, 60), 0.2)
    events = a.feed(mb.note_on(0, 60, 50), 0.6)
    assert events == [NoteCompleted(Note(60, 0.1, 0.6, 80), 0), NoteStarted(60, 50, 0, 0.6)]
    a.feed(mb.note_off(0, 60), 0.7)
    assert completed(a.feed(mb.control_change(0, mb.CC_SUSTAIN, 0), 1.0)) == [Note(60, 0.6, 1.0, 50)]


def test_sustain_is_per_channel():
    a = NoteAssembler()
    a.feed(mb.control_change(1, mb.CC_SUSTAIN, 127), 0.0)
    a.feed(mb.note_on(0, 60, 80), 0.1)
    assert completed(a.feed(mb.note_off(0, 60), 0.2)) == [Note(60, 0.1, 0.2, 80)]


def test_channel_filter_drops_other_channels_but_keeps_realtime():
    a = NoteAssembler(channel_filter={2})
    assert a.feed(mb.note_on(0, 60, 80), 0.0) == []
    assert a.feed(mb.note_on(2, 62, 80), 0.0) == [NoteStarted(62, 80, 2, 0.0)]
    assert a.feed(mb.control_change(5, mb.CC_SUSTAIN, 127), 0.0) == []
    assert a.feed([mb.TIMING_CLOCK], 0.1) == [ClockTick(0.1)]
    assert not a.pedal_down
    with pytest.raises(ValueError, match="channel"):
        NoteAssembler(channel_filter={16})


def test_realtime_controls_and_programs_pass_through():
    a = NoteAssembler()
    assert a.feed([mb.START], 1.0) == [ClockStart(1.0)]
    assert a.feed([mb.STOP], 2.0) == [ClockStop(2.0)]
    assert a.feed([mb.CONTINUE], 3.0) == [ClockContinue(3.0)]
    assert a.feed(mb.program_change(4, 19), 4.0) == [ProgramChanged(4, 19, 4.0)]
    assert a.feed(mb.control_change(4, mb.CC_MODULATION, 33), 5.0) == [ControlChanged(4, 1, 33, 5.0)]


@pytest.mark.parametrize(
    "message",
    [
        [mb.ACTIVE_SENSING],
        [mb.RESET],
        [0xF4],
        [0xF5],
        [0xF9],
        [0xFD],
        [mb.SYSEX_START, 0x7E, 0x7F, 0x09, 0x01, mb.SYSEX_END],
        [mb.POLY_AFTERTOUCH, 60, 10],
        [mb.CHANNEL_AFTERTOUCH, 10],
        [mb.PITCH_BEND, 0, 64],
        [60, 100],  # data bytes without status (running status)
        [mb.NOTE_ON, 60],  # truncated
        [mb.NOTE_ON],
        [mb.PROGRAM_CHANGE],
        [mb.NOTE_ON, 60, 200],  # "data" byte with the status bit
        [mb.NOTE_ON, mb.NOTE_OFF, 60],
        [],
        [-1, 3],
        [300],
        [mb.NOTE_ON, 60.0, 100],  # not ints
        [True, 1, 1],
        "garbage",
        None,
    ],
)
def test_ignored_messages_produce_nothing_and_never_raise(message):
    a = NoteAssembler()
    assert a.feed(message, 0.0) == []  # type: ignore[arg-type]
    assert not a.sounding


def test_extra_bytes_in_one_delivery_are_read_with_running_status():
    a = NoteAssembler()  # a broken driver's "message": a note-on and its release, running status
    assert a.feed([mb.NOTE_ON, 60, 100, 60, 0], 0.0) == [NoteStarted(60, 100, 0, 0.0), NoteCompleted(Note(60, 0.0, 0.0, 100), 0)]
    assert not a.sounding


def test_a_message_split_over_two_deliveries_still_counts():
    a = NoteAssembler()
    a.feed(mb.note_on(0, 60, 100), 0.0)
    assert a.feed([mb.NOTE_OFF, 60], 0.5) == []
    assert completed(a.feed([0], 0.6)) == [Note(60, 0.0, 0.6, 100)]


def test_all_notes_off_from_the_keyboard_ends_its_channel():
    a = NoteAssembler()
    a.feed(mb.note_on(0, 60, 80), 0.0)
    a.feed(mb.note_on(1, 61, 80), 0.0)
    assert completed(a.feed(mb.all_notes_off(0), 0.5)) == [Note(60, 0.0, 0.5, 80)]
    assert a.sounding == {(1, 61)}


def test_reset_all_controllers_lifts_the_pedal():
    a = NoteAssembler()
    a.feed(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.0)
    a.feed(mb.note_on(0, 60, 80), 0.1)
    a.feed(mb.note_off(0, 60), 0.2)
    events = a.feed(mb.control_change(0, mb.CC_RESET_ALL_CONTROLLERS, 0), 0.4)
    assert PedalChanged(False, 0, 0.4) in events
    assert completed(events) == [Note(60, 0.1, 0.4, 80)]


def test_flush_completes_everything_and_lifts_pedals():
    a = NoteAssembler()
    a.feed(mb.control_change(0, mb.CC_SUSTAIN, 127), 0.0)
    a.feed(mb.note_on(0, 60, 80), 0.1)
    a.feed(mb.note_off(0, 60), 0.2)
    a.feed(mb.note_on(0, 64, 70), 0.3)
    events = a.flush(1.0)
    assert completed(events) == [Note(60, 0.1, 1.0, 80), Note(64, 0.3, 1.0, 70)]
    assert events[-1] == PedalChanged(False, 0, 1.0)
    assert not a.sounding and not a.pedal_down and a.flush(2.0) == []


def test_time_going_backwards_never_gives_negative_durations():
    a = NoteAssembler()
    a.feed(mb.note_on(0, 60, 80), 1.0)
    assert completed(a.feed(mb.note_off(0, 60), 0.9))[0].duration == 0.0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(
                st.lists(st.integers(0, 255), max_size=6),
                st.lists(st.integers(-300, 600), max_size=4),
                # biased towards meaningful messages so notes and pedals actually happen
                st.tuples(
                    st.sampled_from([0x80, 0x90, 0xB0, 0x90 | 1, 0xC0, 0xE0]),
                    st.sampled_from([60, 62, 64, 64, 123, 120, 121]),
                    st.integers(0, 127),
                ).map(list),
            ),
            st.floats(0.0, 0.5),
        ),
        max_size=60,
    )
)
def test_random_bytes_never_raise_and_flush_silences(messages):
    a = NoteAssembler()
    t = 0.0
    started = finished = 0
    for message, dt in messages:
        t += dt
        events = a.feed(message, t)
        started += sum(isinstance(e, NoteStarted) for e in events)
        finished += sum(isinstance(e, NoteCompleted) for e in events)
        assert all(e.note.duration >= 0 for e in events if isinstance(e, NoteCompleted))
    finished += sum(isinstance(e, NoteCompleted) for e in a.flush(t + 1.0))
    assert started == finished  # every onset got exactly one completion
    assert not a.sounding and not a.keys_down and not a.pedal_down
