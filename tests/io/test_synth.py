"""FluidSynth rendering: SoundFont search, the synth wrapper, and WAV renders measured by their audio."""

from __future__ import annotations

import builtins
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from livegen.errors import LivegenError, MidiFileError, SoundfontError
from livegen.io import synth as synth_module
from livegen.io.synth import FluidSynth, assign_channels, find_soundfont, render_midi_file, render_tracks
from livegen.notes import Note, Track, write_midi

SR = 44100
# Measured with TimGM6mb at the default gain: a piano line sounds at RMS ~680 (int16 units) and
# the last 0.25 s of a 1 s tail is dither only (RMS ~0.5, |sample| <= 1), reverb on or off.
SOUNDING_RMS = 100
SILENT_RMS = 3


@pytest.fixture(scope="module")
def soundfont() -> Path:
    """A real SoundFont and libfluidsynth, or skip: render tests need both."""
    try:
        path = find_soundfont()
        synth_module._fluidsynth()
    except SoundfontError as exc:
        pytest.skip(str(exc))
    return path


def read_wav(path: Path) -> tuple[wave._wave_params, np.ndarray]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        frames = np.frombuffer(wav.readframes(params.nframes), dtype="<i2").reshape(-1, params.nchannels)
    return params, frames


def rms(frames: np.ndarray) -> float:
    return float(np.sqrt(np.mean(frames.astype(np.float64) ** 2)))


def melody(start: float = 0.0) -> list[Note]:
    return [Note(60 + 2 * i, start + 0.25 * i, start + 0.25 * (i + 1), 90) for i in range(8)]


class RecordingSynth(FluidSynth):
    """The real synth, also logging each call in order, with the frames pulled between them."""

    def __init__(self, *args, **kwargs) -> None:
        self.log: list[tuple] = []
        super().__init__(*args, **kwargs)
        self.log.clear()  # drop the constructor's default program setup

    def program(self, channel, program, drum=False):
        self.log.append(("program", channel, program, drum))
        super().program(channel, program, drum)

    def note_on(self, channel, pitch, velocity):
        self.log.append(("on", channel, pitch))
        super().note_on(channel, pitch, velocity)

    def note_off(self, channel, pitch):
        self.log.append(("off", channel, pitch))
        super().note_off(channel, pitch)

    def samples(self, n_frames):
        self.log.append(("samples", n_frames))
        return super().samples(n_frames)


# -- finding a SoundFont ------------------------------------------------------------------


@pytest.fixture
def fake_fonts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    fonts = {}
    for name in ("explicit", "env", "system1", "system2"):
        fonts[name] = tmp_path / f"{name}.sf2"
        fonts[name].write_bytes(b"RIFF")
    missing = tmp_path / "nowhere.sf2"
    monkeypatch.setattr(synth_module, "SOUNDFONT_PATHS", (str(missing), str(fonts["system1"]), str(fonts["system2"])))
    monkeypatch.delenv("LIVEGEN_SOUNDFONT", raising=False)
    return fonts


def test_soundfont_search_order(fake_fonts: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_soundfont() == fake_fonts["system1"]  # first existing system path
    monkeypatch.setenv("LIVEGEN_SOUNDFONT", str(fake_fonts["env"]))
    assert find_soundfont() == fake_fonts["env"]
    assert find_soundfont(fake_fonts["explicit"]) == fake_fonts["explicit"]
    assert find_soundfont(str(fake_fonts["explicit"])) == fake_fonts["explicit"]


def test_missing_explicit_soundfont_is_an_error_not_a_fallback(fake_fonts, tmp_path: Path) -> None:
    typo = tmp_path / "typo.sf2"
    with pytest.raises(SoundfontError, match="typo.sf2"):
        find_soundfont(typo)


def test_missing_env_soundfont_names_path_and_variable(fake_fonts, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LIVEGEN_SOUNDFONT", str(tmp_path / "gone.sf2"))
    with pytest.raises(SoundfontError, match=r"gone\.sf2.*LIVEGEN_SOUNDFONT"):
        find_soundfont()


def test_no_soundfont_lists_places_and_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LIVEGEN_SOUNDFONT", raising=False)
    places = (str(tmp_path / "a.sf2"), str(tmp_path / "b.sf2"))
    monkeypatch.setattr(synth_module, "SOUNDFONT_PATHS", places)
    with pytest.raises(SoundfontError) as info:
        find_soundfont()
    message = str(info.value)
    for expected in (*places, "apt install", "timgm6mb-soundfont", "--soundfont", "LIVEGEN_SOUNDFONT"):
        assert expected in message
    assert isinstance(info.value, OSError) and isinstance(info.value, LivegenError)


def test_missing_fluidsynth_library_is_a_soundfont_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_library(name, *args, **kwargs):
        if name == "fluidsynth":
            raise ImportError("Couldn't find the FluidSynth library.")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "fluidsynth", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_library)
    with pytest.raises(SoundfontError, match="libfluidsynth"):
        synth_module._fluidsynth()


def test_missing_pyfluidsynth_is_a_soundfont_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fluidsynth", None)  # makes `import fluidsynth` fail as not installed
    with pytest.raises(SoundfontError, match="pip install pyfluidsynth"):
        synth_module._fluidsynth()


# -- the synth wrapper --------------------------------------------------------------------


def test_synth_samples_shape_and_sound(soundfont: Path) -> None:
    with FluidSynth(soundfont, reverb=False, chorus=False) as synth:
        quiet = synth.samples(4410)
        assert quiet.shape == (4410, 2) and quiet.dtype == np.int16
        assert rms(quiet) < SILENT_RMS
        synth.program(0, 0)
        synth.note_on(0, 60, 100)
        assert rms(synth.samples(4410)) > SOUNDING_RMS
        synth.all_notes_off()
        synth.samples(SR)  # release tail
        assert rms(synth.samples(4410)) < SILENT_RMS
        assert synth.samples(0).shape == (0, 2)
    assert synth.closed
    synth.close()  # twice is fine
    with pytest.raises(ValueError, match="closed"):
        synth.note_on(0, 60, 100)


def test_synth_rejects_bad_arguments(soundfont: Path) -> None:
    with FluidSynth(soundfont) as synth:
        with pytest.raises(ValueError, match="channel"):
            synth.note_on(16, 60, 100)
        with pytest.raises(ValueError, match="pitch"):
            synth.note_on(0, 128, 100)
        with pytest.raises(ValueError, match="program"):
            synth.program(0, 200)
        with pytest.raises(ValueError, match="n_frames"):
            synth.samples(-1)


def test_unloadable_soundfont_is_a_soundfont_error(tmp_path: Path, soundfont: Path) -> None:
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"not a soundfont")
    with pytest.raises(SoundfontError, match="junk.sf2"):
        FluidSynth(junk)


# -- rendering ----------------------------------------------------------------------------


def test_render_wav_format_duration_and_levels(tmp_path: Path, soundfont: Path) -> None:
    tail = 1.0
    result = render_tracks([Track("piano", melody())], tmp_path / "sub" / "out.wav", soundfont, tail_seconds=tail)
    params, frames = read_wav(result.path)
    assert (params.framerate, params.nchannels, params.sampwidth) == (SR, 2, 2)
    assert len(frames) == round((2.0 + tail) * SR)  # last note-off at 2.0 s, plus the tail
    assert result.seconds == pytest.approx(2.0 + tail)
    assert (result.sample_rate, result.channels) == (SR, 2)
    assert rms(frames[: 2 * SR]) > SOUNDING_RMS
    assert rms(frames[-SR // 4 :]) < SILENT_RMS  # the reverb tail has died away
    assert 0 < result.peak < 1 and 0 < result.rms < result.peak


def test_render_is_sample_accurate(tmp_path: Path, soundfont: Path) -> None:
    onset = 0.5
    result = render_tracks([Track("piano", melody(onset))], tmp_path / "late.wav", soundfont, tail_seconds=0.5, reverb=False)
    _, frames = read_wav(result.path)
    first = round(onset * SR)
    assert np.abs(frames[:first].astype(int)).max() <= 1  # dither only before the note
    # FluidSynth starts a voice at its next 64-frame block, then the attack ramps up: measured
    # above dither 62 frames (1.4 ms) after the intended frame.
    heard = np.flatnonzero(np.abs(frames[first:].astype(int)).max(axis=1) > 2)
    assert heard[0] < 0.003 * SR


def test_render_orders_off_before_on_and_keeps_tiny_notes(tmp_path, soundfont, monkeypatch) -> None:
    monkeypatch.setattr(synth_module, "FluidSynth", RecordingSynth)
    made: list[RecordingSynth] = []
    monkeypatch.setattr(RecordingSynth, "__enter__", lambda self: made.append(self) or self)
    notes = [Note(64, 0.0, 0.5), Note(64, 0.5, 1.0), Note(67, 1.0, 1.0)]  # repeated key, zero-length note
    render_tracks([Track("t", notes)], tmp_path / "order.wav", soundfont, tail_seconds=0.0)
    log: list[tuple] = []
    for entry in made[0].log:  # merge consecutive sample pulls: block size is not the point
        if entry[0] == "samples" and log and log[-1][0] == "samples":
            log[-1] = ("samples", log[-1][1] + entry[1])
        elif entry[0] != "program":
            log.append(entry)
    assert log == [
        ("on", 0, 64),
        ("samples", SR // 2),
        ("off", 0, 64),
        ("on", 0, 64),
        ("samples", SR // 2),
        ("off", 0, 64),
        ("on", 0, 67),
        ("samples", 1),  # a zero-length note still sounds for one frame
        ("off", 0, 67),
    ]


def test_assign_channels_skips_drum_channel() -> None:
    assert assign_channels([False, True, False]) == [0, 9, 1]
    channels = assign_channels([False] * 16 + [True, True])
    assert channels[:16] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16]
    assert channels[16:] == [9, 25]
    assert len(set(channels)) == len(channels)


def test_multitrack_render_uses_distinct_channels_and_programs(tmp_path, soundfont, monkeypatch) -> None:
    monkeypatch.setattr(synth_module, "FluidSynth", RecordingSynth)
    made: list[RecordingSynth] = []
    monkeypatch.setattr(RecordingSynth, "__enter__", lambda self: made.append(self) or self)
    tracks = [
        Track("piano", melody(), program=0),
        Track("drums", [Note(36, 0.0, 0.1, 110), Note(38, 0.5, 0.6, 100)], program=0, is_drum=True),
        Track("strings", [Note(48, 0.0, 2.0, 70)], program=48),
    ]
    result = render_tracks(tracks, tmp_path / "band.wav", soundfont, tail_seconds=0.5)
    log = made[0].log
    assert [e for e in log if e[0] == "program"] == [("program", 0, 0, False), ("program", 9, 0, True), ("program", 1, 48, False)]
    channels_of = {pitch: ch for kind, ch, pitch, *_ in (e for e in log if e[0] == "on")}
    assert channels_of[36] == channels_of[38] == 9
    assert channels_of[48] == 1
    assert all(channels_of[n.pitch] == 0 for n in melody())
    _, frames = read_wav(result.path)
    assert rms(frames) > SOUNDING_RMS


def test_render_midi_file_keeps_instruments(tmp_path: Path, soundfont: Path) -> None:
    midi = tmp_path / "in.mid"
    write_midi(midi, [Track("lead", melody(), program=73), Track("kit", [Note(42, 0.0, 0.1)], is_drum=True)])
    result = render_midi_file(midi, tmp_path / "out" / "in.wav", soundfont, tail_seconds=0.5)
    params, frames = read_wav(result.path)
    assert params.framerate == SR and len(frames) == round(2.5 * SR)
    assert rms(frames[: 2 * SR]) > SOUNDING_RMS


def test_render_real_midi_file_from_music21(tmp_path: Path, soundfont: Path) -> None:
    music21 = pytest.importorskip("music21")
    source = next(Path(music21.__file__).parent.rglob("test17.mid"), None)  # 3 tracks, 6 s
    if source is None:
        pytest.skip("music21 ships no test17.mid")
    import pretty_midi

    end = pretty_midi.PrettyMIDI(str(source)).get_end_time()
    result = render_midi_file(source, tmp_path / "real.wav", soundfont, tail_seconds=1.0)
    _, frames = read_wav(result.path)
    assert len(frames) / SR == pytest.approx(end + 1.0, abs=0.05)
    assert rms(frames[: int(end * SR)]) > SOUNDING_RMS
    assert rms(frames[-SR // 4 :]) < SILENT_RMS


def test_unreadable_midi_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mid"
    bad.write_bytes(b"MThd garbage")
    with pytest.raises(MidiFileError, match="broken.mid"):
        render_midi_file(bad, tmp_path / "x.wav")
    with pytest.raises(MidiFileError, match="missing.mid: no such file"):
        render_midi_file(tmp_path / "missing.mid", tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()


def test_unwritable_output_names_the_path(tmp_path: Path, soundfont: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LivegenError, match="out.wav"):
        render_tracks([Track("t", melody())], blocker / "out.wav", soundfont)
    with pytest.raises(LivegenError, match="is a directory"):
        render_tracks([Track("t", melody())], tmp_path, soundfont)


def test_render_with_missing_soundfont_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(SoundfontError, match="none.sf2"):
        render_tracks([Track("t", melody())], tmp_path / "w" / "out.wav", tmp_path / "none.sf2")
    assert not (tmp_path / "w").exists()
