"""Sinks: validation, sounding-note tracking, silencing on close, fan-out, recording."""

from __future__ import annotations

import pytest

from livegen import midi_bytes as mb
from livegen.clock import ManualClock
from livegen.io.sinks import MemorySink, MultiSink, NullSink, RecordingSink, Sink
from livegen.notes import Note


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda s: s.note_on(16, 60, 80), "channel"),
        (lambda s: s.note_on(-1, 60, 80), "channel"),
        (lambda s: s.note_on(0, 128, 80), "pitch"),
        (lambda s: s.note_on(0, 60, 200), "velocity"),
        (lambda s: s.note_off(0, -5), "pitch"),
        (lambda s: s.control(0, 128, 0), "control"),
        (lambda s: s.control(0, 7, 128), "value"),
        (lambda s: s.program(0, 128), "program"),
        (lambda s: s.all_notes_off([0, 16]), "channel"),
    ],
)
def test_public_methods_validate_naming_the_field(call, field):
    sink = MemorySink(ManualClock())
    with pytest.raises(ValueError, match=field):
        call(sink)
    assert sink.events == []


def test_wrong_types_are_type_errors():
    sink = MemorySink(ManualClock())
    with pytest.raises(TypeError, match="pitch"):
        sink.note_on(0, 60.0, 80)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="channel"):
        sink.note_off("0", 60)  # type: ignore[arg-type]


def test_memory_sink_records_events_with_clock_and_bytes():
    clock = ManualClock(5.0)
    sink = MemorySink(clock)
    sink.program(1, 4)
    sink.note_on(1, 60, 100)
    clock.advance(0.5)
    sink.control(1, mb.CC_SUSTAIN, 127)
    sink.note_off(1, 60)
    assert sink.events == [
        ("program", 1, 4, 5.0),
        ("note_on", 1, 60, 100, 5.0),
        ("control", 1, 64, 127, 5.5),
        ("note_off", 1, 60, 5.5),
    ]
    assert sink.messages == [[0xC1, 4], [0x91, 60, 100], [0xB1, 64, 127], [0x81, 60, 0]]


def test_velocity_zero_note_on_is_a_note_off():
    sink = MemorySink(ManualClock())
    sink.note_on(0, 60, 80)
    sink.note_on(0, 60, 0)
    assert sink.without_times() == [("note_on", 0, 60, 80), ("note_off", 0, 60)]
    assert not sink.sounding


def test_all_notes_off_ends_each_sounding_note_then_cc123_per_used_channel():
    sink = MemorySink(ManualClock())
    sink.note_on(0, 60, 80)
    sink.note_on(0, 64, 80)
    sink.note_on(2, 50, 80)
    sink.note_off(2, 50)
    sink.control(5, mb.CC_VOLUME, 100)
    assert sink.sounding == {(0, 60), (0, 64)}
    sink.events.clear()
    sink.all_notes_off()
    assert sink.without_times() == [
        ("note_off", 0, 60),
        ("note_off", 0, 64),
        ("control", 0, 123, 0),
        ("control", 2, 123, 0),
        ("control", 5, 123, 0),
    ]
    assert not sink.sounding


def test_all_notes_off_on_chosen_channels():
    sink = MemorySink(ManualClock())
    sink.note_on(0, 60, 80)
    sink.note_on(1, 61, 80)
    sink.events.clear()
    sink.all_notes_off([1])
    assert sink.without_times() == [("note_off", 1, 61), ("control", 1, 123, 0)]
    assert sink.sounding == {(0, 60)}


def test_close_silences_first_and_is_idempotent():
    sink = MemorySink(ManualClock())
    sink.note_on(3, 60, 80)
    sink.close()
    sink.close()
    assert sink.without_times() == [("note_on", 3, 60, 80), ("note_off", 3, 60), ("control", 3, 123, 0), ("close",)]
    with pytest.raises(ValueError, match="closed"):
        sink.note_on(3, 60, 80)


def test_context_manager_closes():
    with MemorySink(ManualClock()) as sink:
        sink.note_on(0, 60, 80)
    assert sink.closed and not sink.sounding


def test_byte_level_subclass_needs_only_send():
    class Port(Sink):
        def __init__(self) -> None:
            super().__init__()
            self.sent: list[list[int]] = []
            self.closed_port = False

        def _send(self, message: list[int]) -> None:
            self.sent.append(message)

        def _close(self) -> None:
            self.closed_port = True

    port = Port()
    port.note_on(0, 60, 80)
    port.close()
    assert port.sent == [[0x90, 60, 80], [0x80, 60, 0], [0xB0, 123, 0]]
    assert port.closed_port


def test_base_without_hooks_says_what_to_override():
    with pytest.raises(NotImplementedError, match="_send"):
        Sink().note_on(0, 60, 80)


class Broken(Sink):
    def _send(self, message: list[int]) -> None:
        raise OSError("unplugged")


def test_multisink_isolates_a_failing_sink():
    a, b = MemorySink(ManualClock()), MemorySink(ManualClock())
    multi = MultiSink([a, Broken(), b])
    with pytest.raises(OSError, match="unplugged"):
        multi.note_on(0, 60, 80)
    assert a.without_times() == b.without_times() == [("note_on", 0, 60, 80)]
    with pytest.raises(OSError):
        multi.close()  # the broken one keeps failing, the others are still closed cleanly
    for sink in (a, b):
        assert sink.closed and not sink.sounding
        assert ("note_off", 0, 60) in sink.without_times()


def test_multisink_on_error_collects_instead_of_raising():
    errors: list[BaseException] = []
    a = MemorySink(ManualClock())
    multi = MultiSink([Broken(), a, Broken()], on_error=errors.append)
    multi.control(0, mb.CC_VOLUME, 90)
    assert a.without_times() == [("control", 0, 7, 90)]
    assert len(errors) == 2 and all(isinstance(e, OSError) for e in errors)


def test_multisink_raises_first_error_with_the_rest_noted():
    multi = MultiSink([Broken(), Broken()])
    with pytest.raises(OSError) as info:
        multi.program(0, 1)
    assert any("also failed" in note for note in info.value.__notes__)


def test_recording_sink_tracks_human_and_ai_relative_to_origin():
    clock = ManualClock(1000.0)
    rec = RecordingSink(clock)
    rec.program(0, 5)
    clock.set(1001.0)
    rec.note_on(0, 72, 90)
    clock.set(1001.5)
    rec.note_off(0, 72)
    rec.add_note(Note(60, 1000.2, 1000.8, 70))
    clock.set(1002.0)
    rec.note_on(0, 74, 60)  # still on at close
    clock.set(1003.0)
    rec.close()
    human, ai = rec.tracks()
    assert human.name == "human" and human.notes == [Note(60, pytest.approx(0.2), pytest.approx(0.8), 70)]
    assert ai.name == "livegen" and ai.program == 5
    assert ai.notes == [Note(72, 1.0, 1.5, 90), Note(74, 2.0, 3.0, 60)]


def test_recording_sink_restrike_and_written_file(tmp_path):
    pretty_midi = pytest.importorskip("pretty_midi")
    from livegen.notes import write_midi

    clock = ManualClock(0.0)
    rec = RecordingSink(clock)
    rec.note_on(0, 60, 80)
    clock.set(0.5)
    rec.note_on(0, 60, 80)  # re-strike ends the first note
    clock.set(1.0)
    rec.note_off(0, 60)
    rec.add_note(Note(48, 0.0, 1.0, 64))
    assert [(n.start, n.end) for n in rec.tracks()[1].notes] == [(0.0, 0.5), (0.5, 1.0)]
    path = tmp_path / "session.mid"
    write_midi(path, rec.tracks())
    midi = pretty_midi.PrettyMIDI(str(path))
    assert [inst.name for inst in midi.instruments] == ["human", "livegen"]
    assert [len(inst.notes) for inst in midi.instruments] == [1, 2]


def test_null_sink_accepts_everything():
    sink = NullSink()
    sink.note_on(0, 60, 80)
    sink.close()
    assert sink.closed
