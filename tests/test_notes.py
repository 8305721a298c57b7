from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from factories import melody
from livegen.errors import LivegenError, MidiFileError
from livegen.notes import (
    DURATION,
    PITCH,
    STEP,
    VELOCITY,
    Note,
    Track,
    array_to_notes,
    notes_to_array,
    read_midi,
    write_midi,
)


def music21_midi_files() -> list[Path]:
    music21 = pytest.importorskip("music21")
    root = Path(music21.__file__).parent
    return sorted(root.rglob("*.mid")) + sorted(root.rglob("*.midi"))


def assert_same_notes(a: list[Note], b: list[Note], tolerance: float = 0.001) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.pitch == y.pitch
        assert x.velocity == y.velocity
        assert abs(x.start - y.start) <= tolerance
        assert abs(x.duration - y.duration) <= tolerance


def round_trip(notes: list[Note], tmp_path: Path) -> list[Note]:
    array = notes_to_array(notes)
    back = array_to_notes(array, start=notes[0].start)
    out = tmp_path / "round_trip.mid"
    write_midi(out, [Track("x", back)])
    return read_midi(out)


def test_round_trip_of_a_file_made_with_pretty_midi_keeps_chords(tmp_path):
    midi = pretty_midi.PrettyMIDI(initial_tempo=97.0)  # odd tempo: ticks don't align with ours
    piano = pretty_midi.Instrument(program=0)
    chord_times = [0.5, 1.2345, 2.0007]
    for t in chord_times:  # three-note chords
        for pitch, velocity in ((60, 90), (64, 70), (67, 50)):
            piano.notes.append(pretty_midi.Note(velocity=velocity, pitch=pitch, start=t, end=t + 0.4321))
    piano.notes.append(pretty_midi.Note(velocity=33, pitch=72, start=2.9, end=3.05))
    midi.instruments.append(piano)
    path = tmp_path / "chords.mid"
    midi.write(str(path))

    notes = read_midi(path)
    array = notes_to_array(notes)
    assert array.shape == (10, 4)
    # chords are notes with step 0, lowest pitch first
    assert np.count_nonzero(array[:, STEP] == 0) == 1 + 2 * 3
    assert list(array[:3, PITCH]) == [60, 64, 67]
    assert_same_notes(round_trip(notes, tmp_path), notes)


def test_round_trip_of_real_music21_midi_files(tmp_path):
    files = music21_midi_files()
    tested = 0
    for path in files:
        try:
            notes = read_midi(path)
        except MidiFileError:
            continue  # a few of music21's test files hold no notes
        assert_same_notes(round_trip(notes, tmp_path), notes)
        tested += 1
    assert tested >= 10, f"only {tested} of {len(files)} music21 MIDI files had notes"


def test_array_columns_and_inverse():
    notes = melody(8, start=1.5)
    array = notes_to_array(notes)
    assert array[0, STEP] == 0.0
    assert np.allclose(array[1:, STEP], 0.25)
    assert np.allclose(array[:, DURATION], 0.225)
    assert list(array[:, VELOCITY]) == [n.velocity for n in notes]
    assert array_to_notes(array, start=1.5) == notes


def test_drums_are_left_out_and_instruments_can_be_chosen(tmp_path):
    path = tmp_path / "band.mid"
    write_midi(
        path,
        [
            Track("bass", [Note(36, 0.0, 0.5, 100)], program=33),
            Track("kit", [Note(38, 0.0, 0.1, 100)], is_drum=True),
            Track("lead", [Note(72, 0.25, 0.5, 90)], program=80),
        ],
    )
    assert [n.pitch for n in read_midi(path)] == [36, 72]
    assert [n.pitch for n in read_midi(path, instrument=2)] == [72]
    assert [n.pitch for n in read_midi(path, instrument="lead")] == [72]
    assert [n.pitch for n in read_midi(path, instrument="Electric Bass")] == [36]
    with pytest.raises(MidiFileError, match=r"band\.mid: no instrument 'organ' \(instruments: 0: bass"):
        read_midi(path, instrument="organ")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"this is a text file, not MIDI\n", "not a readable MIDI file"),
        (None, "not a readable MIDI file"),  # truncated: filled in below
    ],
)
def test_bad_files_name_the_file_and_the_reason(tmp_path, content, reason):
    path = tmp_path / "bad.mid"
    if content is None:
        good = tmp_path / "good.mid"
        write_midi(good, [Track("x", melody(64))])
        content = good.read_bytes()[:60]
    path.write_bytes(content)
    with pytest.raises(MidiFileError) as info:
        read_midi(path)
    assert str(path) in str(info.value) and reason in str(info.value)
    assert isinstance(info.value, LivegenError)


def test_file_without_notes_and_missing_file(tmp_path):
    empty = tmp_path / "empty.mid"
    write_midi(empty, [Track("nothing", [])])
    with pytest.raises(MidiFileError, match="empty.mid: contains no notes"):
        read_midi(empty)
    with pytest.raises(MidiFileError, match="missing.mid: no such file"):
        read_midi(tmp_path / "missing.mid")


def test_unisons_and_same_pitch_overlaps_are_resolved_like_one_channel():
    from livegen.notes import resolve_unisons

    doubled = [Note(60, 0.0, 1.0, 50), Note(60, 0.002, 1.5, 90)]
    assert resolve_unisons(doubled) == [Note(60, 0.0, 1.5, 90)]
    overlapping = [Note(60, 0.0, 1.0, 50), Note(60, 0.5, 0.8, 70), Note(64, 0.1, 2.0, 60)]
    assert resolve_unisons(overlapping) == [Note(60, 0.0, 0.5, 50), Note(64, 0.1, 2.0, 60), Note(60, 0.5, 0.8, 70)]


def test_a_file_hours_long_is_written_so_that_it_reads_back(tmp_path):
    """pretty_midi refuses a last tick past 10 million as corrupt: at 960 ticks per beat that is
    87 minutes.  A primer that long (a lying header can make one) must still round-trip."""
    notes = [Note(60, 0.0, 1.0, 80), Note(64, 38_000.0, 38_001.0, 90)]
    out = tmp_path / "long.mid"
    write_midi(out, [Track("x", notes)])
    back = read_midi(out)
    assert [n.pitch for n in back] == [60, 64]
    assert abs(back[1].start - 38_000.0) <= 0.01 and abs(back[1].duration - 1.0) <= 0.01
