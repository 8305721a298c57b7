"""FluidSynth: finding a SoundFont, one small synth wrapper, and offline WAV rendering.

The wrapper is shared by offline rendering (pull exactly the frames between events; FluidSynth
then starts each event at its next 64-frame block, within 1.5 ms at 44.1 kHz) and the live
synth sink (FluidSynth's own audio driver).  pyfluidsynth is imported only when a synth is
made: it loads the C library at import, and a missing libfluidsynth must be one clear
SoundfontError, not a traceback on `import livegen`.
"""

from __future__ import annotations

import io
import os
import sys
import wave
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterable, Iterator, Sequence

import numpy as np

from livegen import midi_bytes as mb
from livegen.errors import LivegenError, OutputFileError, SoundfontError
from livegen.io.sinks import Sink
from livegen.notes import Track, instrument_track, load_pretty_midi, prepare_output

SOUNDFONT_ENV = "LIVEGEN_SOUNDFONT"

# FluidSynth audio drivers tried by start_audio("auto"), most desktop-friendly first.
AUDIO_DRIVERS: dict[str, tuple[str, ...]] = {
    "linux": ("pipewire", "pulseaudio", "jack", "alsa"),
    "darwin": ("coreaudio", "jack"),
    "win32": ("wasapi", "dsound"),
}

SOUNDFONT_PATHS: tuple[str, ...] = (
    # Debian/Ubuntu (timgm6mb-soundfont, fluid-soundfont-gm, musescore-general-soundfont)
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/sounds/sf2/TimGM6mb.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/MuseScore_General.sf2",
    # Fedora, Arch, openSUSE
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM2-2.sf2",
    "/usr/share/sounds/sf2/FluidR3_GS.sf2",
    # hand installs and FreeBSD
    "/usr/local/share/soundfonts/default.sf2",
    "/usr/local/share/soundfonts/FluidR3_GM.sf2",
    "/usr/local/share/sounds/sf2/FluidR3_GM.sf2",
    "~/.local/share/soundfonts/default.sf2",
    "~/.local/share/soundfonts/FluidR3_GM.sf2",
    # macOS (Homebrew on Apple silicon and Intel, user sound banks)
    "/opt/homebrew/share/soundfonts/default.sf2",
    "/opt/homebrew/share/fluid-synth/sf2/VintageDreamsWaves-v2.sf2",
    "/usr/local/share/fluid-synth/sf2/VintageDreamsWaves-v2.sf2",
    "~/Library/Audio/Sounds/Banks/default.sf2",
    "~/Library/Audio/Sounds/Banks/FluidR3_GM.sf2",
)
"""System places searched in order after the explicit path and the environment variable."""

SAMPLE_RATE = 44100
DEFAULT_GAIN = 0.2  # FluidSynth's own default: solo piano peaks near -23 dBFS, five string parts barely clip
MIDI_CHANNELS = 16
DRUM_CHANNEL = 9
DRUM_BANK = 128
CC_ALL_NOTES_OFF = 123
MAX_BLOCK_FRAMES = 16384  # frames pulled per get_samples call, so long gaps need no huge buffer


def find_soundfont(explicit: str | os.PathLike | None = None) -> Path:
    """The SoundFont to use: ``explicit``, else $LIVEGEN_SOUNDFONT, else the first system path found.

    A path the user named that does not exist is an error (not a silent fallback), so a typo
    never plays the wrong instrument.
    """
    if explicit is not None and str(explicit) != "":
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise SoundfontError(f"SoundFont not found: {path}")
        return path
    from_env = os.environ.get(SOUNDFONT_ENV, "")
    if from_env:
        path = Path(from_env).expanduser()
        if not path.is_file():
            raise SoundfontError(f"SoundFont not found: {path} (from ${SOUNDFONT_ENV})")
        return path
    searched = [Path(p).expanduser() for p in SOUNDFONT_PATHS]
    for path in searched:
        if path.is_file():
            return path
    places = "\n  ".join(str(p) for p in searched)
    raise SoundfontError(
        "no SoundFont found. Install one (Debian/Ubuntu: sudo apt install timgm6mb-soundfont "
        "or fluid-soundfont-gm; macOS: brew install fluid-synth) or pass --soundfont PATH "
        f"or set ${SOUNDFONT_ENV}. Searched:\n  {places}"
    )


def _fluidsynth() -> ModuleType:
    """Import pyfluidsynth, which loads libfluidsynth at import time."""
    try:
        # pyfluidsynth prints where it found the library when $CI is set: keep stdout clean
        # for `--json` output and the daemon's `ready` line.
        with redirect_stdout(io.StringIO()):
            import fluidsynth
    except ModuleNotFoundError as exc:
        if exc.name == "fluidsynth":
            raise SoundfontError("pyfluidsynth is not installed: pip install pyfluidsynth") from exc
        raise
    except (ImportError, OSError) as exc:
        raise SoundfontError(
            "FluidSynth library not found: sudo apt install libfluidsynth3 (macOS: brew install fluid-synth)"
        ) from exc
    if not hasattr(fluidsynth, "Synth"):  # an unrelated package named fluidsynth
        raise SoundfontError("the installed 'fluidsynth' module is not pyfluidsynth: pip install pyfluidsynth")
    return fluidsynth


@contextmanager
def quiet_stderr(enabled: bool = True) -> Iterator[None]:
    """Silence what C libraries write to file descriptor 2 (Python's own stderr included)."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FluidSynth:
    """One FluidSynth instance with one SoundFont loaded.

    Offline use pulls audio with ``samples``; live use lets FluidSynth's audio driver pull it
    (to be added as ``start_audio``; it must be called at most once and stopped in ``close``).
    FluidSynth's API is thread-safe, so a scheduler thread may call note_on while audio runs.
    """

    def __init__(
        self,
        soundfont: str | os.PathLike | None = None,
        sample_rate: int = SAMPLE_RATE,
        gain: float = DEFAULT_GAIN,
        reverb: bool = True,
        chorus: bool = True,
        channels: int = MIDI_CHANNELS,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if channels < MIDI_CHANNELS or channels % MIDI_CHANNELS:
            raise ValueError(f"channels must be a multiple of {MIDI_CHANNELS}, got {channels}")
        path = find_soundfont(soundfont)
        fluidsynth = _fluidsynth()
        self.soundfont = path
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._synth = fluidsynth.Synth(
            gain=float(gain),
            samplerate=float(sample_rate),
            channels=self.channels,
            **{"synth.reverb.active": int(reverb), "synth.chorus.active": int(chorus)},
        )
        self._sfid = self._synth.sfload(str(path))
        if self._sfid < 0:
            self.close()
            raise SoundfontError(f"{path}: FluidSynth cannot load this SoundFont")
        for channel in range(self.channels):
            if channel % MIDI_CHANNELS == DRUM_CHANNEL:
                self.program(channel, 0, drum=True)
            else:
                self.program(channel, 0)

    # -- control ------------------------------------------------------------------------
    def program(self, channel: int, program: int, drum: bool = False) -> None:
        """Select a GM program; ``drum`` picks from the drum bank (kit 0 if that kit is missing)."""
        self._check_channel(channel)
        mb.check_data("program", program)
        synth = self._live()
        if drum:
            if synth.program_select(channel, self._sfid, DRUM_BANK, program) != 0:
                synth.program_select(channel, self._sfid, DRUM_BANK, 0)
        else:
            synth.program_select(channel, self._sfid, 0, program)

    def note_on(self, channel: int, pitch: int, velocity: int) -> None:
        self._check_channel(channel)
        mb.check_data("pitch", pitch)
        mb.check_data("velocity", velocity)
        self._live().noteon(channel, pitch, velocity)

    def note_off(self, channel: int, pitch: int) -> None:
        self._check_channel(channel)
        mb.check_data("pitch", pitch)
        self._live().noteoff(channel, pitch)

    def control(self, channel: int, cc: int, value: int) -> None:
        self._check_channel(channel)
        mb.check_data("controller", cc)
        mb.check_data("value", value)
        self._live().cc(channel, cc, value)

    def pitch_bend(self, channel: int, value: int) -> None:
        """Bend by ``value`` in -8192..8191 (0 is centre), as pretty_midi and mido count it."""
        self._check_channel(channel)
        if not -8192 <= value <= 8191:
            raise ValueError(f"pitch bend must be -8192..8191, got {value}")
        self._live().pitch_bend(channel, value)

    def all_notes_off(self, channel: int | None = None) -> None:
        """Release every key (CC 123) on one channel, or on all of them."""
        for ch in range(self.channels) if channel is None else (channel,):
            self.control(ch, CC_ALL_NOTES_OFF, 0)

    # -- audio --------------------------------------------------------------------------
    def samples(self, n_frames: int) -> np.ndarray:
        """The next ``n_frames`` of audio as int16 of shape (n_frames, 2), left/right."""
        if n_frames < 0:
            raise ValueError(f"n_frames must be >= 0, got {n_frames}")
        if n_frames == 0:
            return np.zeros((0, 2), dtype=np.int16)
        interleaved = self._live().get_samples(int(n_frames))
        return np.asarray(interleaved, dtype=np.int16).reshape(n_frames, 2)

    def start_audio(self, driver: str = "auto", period_size: int = 64, periods: int = 2,
                    client_name: str = "livegen") -> str:
        """Play live through FluidSynth's own audio driver; returns the driver that started.

        ``auto`` tries the drivers a desktop usually has, in order.  Small periods keep the
        synth's added latency near period_size * periods / sample_rate (64 * 2 / 44100 = 3 ms).
        Raises SoundfontError naming the drivers tried when none starts (e.g. no sound card).
        """
        synth = self._live()
        if getattr(synth, "audio_driver", None):
            raise RuntimeError("audio already started")
        fluidsynth = _fluidsynth()
        probing = driver == "auto"
        candidates = AUDIO_DRIVERS.get(sys.platform, AUDIO_DRIVERS["linux"]) if probing else (driver,)
        os.environ.setdefault("JACK_NO_START_SERVER", "1")  # never spawn a JACK server behind the user's back
        synth.setting("audio.period-size", int(period_size))
        synth.setting("audio.periods", int(periods))
        synth.setting("audio.jack.id", client_name)
        synth.setting("audio.jack.autoconnect", 1)
        for candidate in candidates:
            synth.setting("audio.driver", candidate)
            with quiet_stderr(probing):  # drivers that are absent complain loudly in C
                handle = fluidsynth.new_fluid_audio_driver(synth.settings, synth.synth)
            if handle:
                synth.audio_driver = handle  # pyfluidsynth's delete() stops it
                return candidate
        raise SoundfontError(f"FluidSynth could not start audio (tried {', '.join(candidates)}); "
                             "no sound device? use --no-synth, or start JACK/PipeWire/PulseAudio")

    # -- lifetime -----------------------------------------------------------------------
    def close(self) -> None:
        """Free the synth; safe to call twice."""
        synth, self._synth = self._synth, None
        if synth is not None:
            synth.delete()

    @property
    def closed(self) -> bool:
        return self._synth is None

    def __enter__(self) -> "FluidSynth":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _live(self):
        if self._synth is None:
            raise ValueError("FluidSynth is closed")
        return self._synth

    def _check_channel(self, channel: int) -> None:
        mb.check_range("channel", channel, 0, self.channels - 1)


# -- offline rendering ------------------------------------------------------------------

# What happens first at one instant: programs, then releases, then controls, then new notes,
# so a repeated note is released before it is struck again.
_PROGRAM, _NOTE_OFF, _CONTROL, _PITCH_BEND, _NOTE_ON = range(5)


@dataclass(frozen=True, slots=True)
class RenderResult:
    """What a render wrote; peak and rms are fractions of full scale (1.0 = 0 dBFS)."""

    path: Path
    seconds: float
    sample_rate: int
    channels: int = 2
    peak: float = 0.0
    rms: float = 0.0


@dataclass(frozen=True, slots=True)
class _Event:
    time: float
    kind: int
    channel: int
    a: int = 0
    b: int = 0
    onset: float = -1.0  # for a note-off: its note-on time; the off lands at least a frame later


def assign_channels(drum_flags: Sequence[bool]) -> list[int]:
    """A distinct channel per track: drums on 9, others on 0-8, 10-15, then the next 16 and on.

    Past 16 channels FluidSynth simply has more (we create as many as needed); a second drum
    track gets its own channel with the drum bank selected on it.
    """
    melodic = (ch for ch in range(1 << 16) if ch % MIDI_CHANNELS != DRUM_CHANNEL)
    drums = (ch for ch in range(1 << 16) if ch % MIDI_CHANNELS == DRUM_CHANNEL)
    return [next(drums) if is_drum else next(melodic) for is_drum in drum_flags]


def _track_events(track: Track, channel: int) -> list[_Event]:
    events = [_Event(0.0, _PROGRAM, channel, track.program, int(track.is_drum))]
    for note in track.notes:
        start = max(float(note.start), 0.0)
        events.append(_Event(start, _NOTE_ON, channel, int(note.pitch), int(np.clip(note.velocity, 1, 127))))
        events.append(_Event(max(float(note.end), start), _NOTE_OFF, channel, int(note.pitch), onset=start))
    return events


def render_tracks(
    tracks: Sequence[Track],
    out_wav: str | os.PathLike,
    soundfont: str | os.PathLike | None = None,
    sample_rate: int = SAMPLE_RATE,
    tail_seconds: float = 2.0,
    *,
    gain: float = DEFAULT_GAIN,
    reverb: bool = True,
) -> RenderResult:
    """Render tracks to a 16-bit stereo WAV lasting the last note-off plus ``tail_seconds``.

    Each track plays on its own channel with its program (drums on channel 9).
    """
    channels = assign_channels([t.is_drum for t in tracks])
    events = [ev for track, ch in zip(tracks, channels) for ev in _track_events(track, ch)]
    end = max((float(n.end) for t in tracks for n in t.notes), default=0.0)
    return _render(events, end, out_wav, soundfont, sample_rate, tail_seconds, gain, reverb)


def render_midi_file(
    in_path: str | os.PathLike,
    out_wav: str | os.PathLike,
    soundfont: str | os.PathLike | None = None,
    sample_rate: int = SAMPLE_RATE,
    tail_seconds: float = 2.0,
    *,
    gain: float = DEFAULT_GAIN,
    reverb: bool = True,
) -> RenderResult:
    """Render a MIDI file with each instrument's own program, controllers (pedal) and bends.

    Raises MidiFileError naming the file if it cannot be read.
    """
    midi = load_pretty_midi(in_path)
    instruments = list(midi.instruments)
    channels = assign_channels([inst.is_drum for inst in instruments])
    events: list[_Event] = []
    end = 0.0
    for index, (inst, ch) in enumerate(zip(instruments, channels)):
        track = instrument_track(inst, index)
        events += _track_events(track, ch)
        events += [_Event(float(c.time), _CONTROL, ch, int(c.number), int(c.value)) for c in inst.control_changes]
        events += [_Event(float(b.time), _PITCH_BEND, ch, int(b.pitch)) for b in inst.pitch_bends]
        end = max([end] + [n.end for n in track.notes])
    return _render(events, end, out_wav, soundfont, sample_rate, tail_seconds, gain, reverb)


def _render(
    events: Iterable[_Event],
    end_seconds: float,
    out_wav: str | os.PathLike,
    soundfont: str | os.PathLike | None,
    sample_rate: int,
    tail_seconds: float,
    gain: float,
    reverb: bool,
) -> RenderResult:
    """Play events into a synth, pulling exactly the frames between consecutive event times."""
    if tail_seconds < 0:
        raise ValueError(f"tail_seconds must be >= 0, got {tail_seconds}")
    events = list(events)

    def frame(seconds: float) -> int:
        return max(int(round(seconds * sample_rate)), 0)

    # Sort on frames, not seconds: events microseconds apart share a frame and must still keep
    # the off-before-on order.  A note shorter than a frame still sounds for one.
    timed = []
    for seq, ev in enumerate(events):
        f = frame(ev.time)
        if ev.kind == _NOTE_OFF and ev.onset >= 0:
            f = max(f, frame(ev.onset) + 1)
        timed.append((f, ev.kind, seq, ev))
    timed.sort(key=lambda item: item[:3])

    total = max([frame(end_seconds + tail_seconds)] + [item[0] for item in timed])
    n_channels = MIDI_CHANNELS * (max((ev.channel for ev in events), default=0) // MIDI_CHANNELS + 1)
    meter = _Meter()
    with FluidSynth(soundfont, sample_rate, gain=gain, reverb=reverb, chorus=reverb, channels=n_channels) as synth:
        path = prepare_output(out_wav)
        try:
            wav = wave.open(str(path), "wb")
        except OSError as exc:
            raise OutputFileError(path, f"cannot write WAV ({exc.strerror or exc})") from exc
        try:
            with wav:
                wav.setnchannels(2)
                wav.setsampwidth(2)
                wav.setframerate(sample_rate)
                done = 0
                for f, _, _, ev in timed:
                    done = _pull(synth, wav, meter, done, min(f, total))
                    _apply(synth, ev)
                _pull(synth, wav, meter, done, total)
        except BaseException as exc:
            path.unlink(missing_ok=True)  # never leave a truncated WAV behind
            if isinstance(exc, OSError) and not isinstance(exc, LivegenError):
                raise OutputFileError(path, f"cannot write WAV ({exc.strerror or exc})") from exc
            raise
    return RenderResult(path, total / sample_rate, sample_rate, 2, meter.peak, meter.rms)


def _apply(synth: FluidSynth, ev: _Event) -> None:
    if ev.kind == _NOTE_ON:
        synth.note_on(ev.channel, ev.a, ev.b)
    elif ev.kind == _NOTE_OFF:
        synth.note_off(ev.channel, ev.a)
    elif ev.kind == _CONTROL:
        synth.control(ev.channel, ev.a, ev.b)
    elif ev.kind == _PITCH_BEND:
        synth.pitch_bend(ev.channel, int(np.clip(ev.a, -8192, 8191)))
    elif ev.kind == _PROGRAM:
        synth.program(ev.channel, ev.a, drum=bool(ev.b))


def _pull(synth: FluidSynth, wav: wave.Wave_write, meter: "_Meter", done: int, until: int) -> int:
    """Synthesise frames ``done..until`` into the WAV; returns the new frame count."""
    while done < until:
        block = synth.samples(min(until - done, MAX_BLOCK_FRAMES))
        wav.writeframes(block.astype("<i2", copy=False).tobytes())
        meter.add(block)
        done += len(block)
    return done


class _Meter:
    """Running peak and RMS, so the render never holds the whole file in memory."""

    def __init__(self) -> None:
        self._peak = 0
        self._sum_sq = 0.0
        self._count = 0

    def add(self, block: np.ndarray) -> None:
        wide = block.astype(np.int64)
        if wide.size:
            self._peak = max(self._peak, int(np.abs(wide).max()))
            self._sum_sq += float(np.square(wide, dtype=np.float64).sum())
            self._count += wide.size

    @property
    def peak(self) -> float:
        return self._peak / 32768.0

    @property
    def rms(self) -> float:
        return (self._sum_sq / self._count) ** 0.5 / 32768.0 if self._count else 0.0


__all__ = [
    "DEFAULT_GAIN",
    "SOUNDFONT_ENV",
    "SOUNDFONT_PATHS",
    "FluidSynth",
    "RenderResult",
    "assign_channels",
    "find_soundfont",
    "render_midi_file",
    "render_tracks",
]


class SynthSink(Sink):
    """The built-in synth as a sink: the answer (and passthrough) played by FluidSynth."""

    def __init__(self, synth: FluidSynth) -> None:
        super().__init__()
        self.synth = synth

    def _note_on(self, channel: int, pitch: int, velocity: int) -> None:
        self.synth.note_on(channel, pitch, velocity)

    def _note_off(self, channel: int, pitch: int) -> None:
        self.synth.note_off(channel, pitch)

    def _control(self, channel: int, control: int, value: int) -> None:
        self.synth.control(channel, control, value)

    def _program(self, channel: int, program: int) -> None:
        self.synth.program(channel, program, drum=channel % MIDI_CHANNELS == DRUM_CHANNEL)

    def _close(self) -> None:
        self.synth.close()
