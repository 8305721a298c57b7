"""Piano-roll PNGs: valid files with and without distributions, clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from livegen.errors import LivegenError, MidiFileError
from livegen.notes import Note, Track, write_midi
from livegen.plot import note_name, pitch_ticks, plot_midi_file, plot_piano_roll

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    return image


def band() -> list[Track]:
    melody = [Note(60 + (i * 5) % 12, 0.2 * i, 0.2 * i + 0.15, 40 + 8 * i) for i in range(10)]
    chords = [Note(p, t, t + 0.8, 70) for t in (0.0, 1.0) for p in (48, 52, 55)]
    drums = [Note(36 if i % 2 == 0 else 38, 0.25 * i, 0.25 * i + 0.05, 100) for i in range(8)]
    return [Track("melody", melody, program=0), Track("chords", chords, program=48), Track("kit", drums, is_drum=True)]


def test_piano_roll_png(tmp_path: Path) -> None:
    out = plot_piano_roll(band(), tmp_path / "plots" / "roll.png", title="band")
    assert out == tmp_path / "plots" / "roll.png"
    read_png(out)


def test_piano_roll_with_distributions_is_taller(tmp_path: Path) -> None:
    plain = read_png(plot_piano_roll(band(), tmp_path / "plain.png"))
    full = read_png(plot_piano_roll(band(), tmp_path / "full.png", distributions=True))
    assert full.shape[0] > plain.shape[0]


def test_degenerate_tracks_still_plot(tmp_path: Path) -> None:
    tracks = [Track("empty"), Track("one", [Note(60, 0.0, 0.0, 1)]), Track("chord", [Note(64, 0, 1), Note(67, 0, 1)])]
    read_png(plot_piano_roll(tracks, tmp_path / "odd.png", distributions=True))
    read_png(plot_piano_roll([], tmp_path / "none.png", distributions=True))


def test_plot_midi_file(tmp_path: Path) -> None:
    midi = tmp_path / "band.mid"
    write_midi(midi, band())
    read_png(plot_midi_file(midi, tmp_path / "band.png"))
    read_png(plot_midi_file(midi, tmp_path / "band_dist.png", distributions=True))


def test_plot_real_midi_file_from_music21(tmp_path: Path) -> None:
    music21 = pytest.importorskip("music21")
    source = next(Path(music21.__file__).parent.rglob("k525short.mid"), None)  # 5 string parts
    if source is None:
        pytest.skip("music21 ships no k525short.mid")
    read_png(plot_midi_file(source, tmp_path / "k525.png", distributions=True))


def test_unreadable_midi_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mid"
    bad.write_bytes(b"definitely not MIDI")
    with pytest.raises(MidiFileError, match="broken.mid"):
        plot_midi_file(bad, tmp_path / "x.png")
    with pytest.raises(MidiFileError, match="nothere.mid: no such file"):
        plot_midi_file(tmp_path / "nothere.mid", tmp_path / "x.png")
    empty = tmp_path / "empty.mid"
    write_midi(empty, [Track("silent")])
    with pytest.raises(MidiFileError, match="empty.mid: contains no notes"):
        plot_midi_file(empty, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_unwritable_png_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LivegenError, match="roll.png"):
        plot_piano_roll(band(), blocker / "roll.png")


def test_note_names_and_ticks() -> None:
    assert [note_name(p) for p in (21, 60, 61, 127)] == ["A0", "C4", "C#4", "G9"]
    assert pitch_ticks(60, 64) == [60, 61, 62, 63, 64]
    wide = pitch_ticks(21, 108)
    assert len(wide) <= 16 and {24, 36, 48, 60, 72, 84, 96, 108} <= set(wide)  # every C labelled
