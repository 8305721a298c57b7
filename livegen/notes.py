"""Notes in seconds, the arrays the model sees, and MIDI files in and out.

A note is (pitch, start, end, velocity) in seconds.  The model's view of a sequence is one
row per note in onset order: (pitch, step, duration, velocity), where step is the time since
the previous onset, so a chord is notes with step 0.  MIDI files go through pretty_midi.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from livegen.errors import MidiFileError, OutputFileError

if TYPE_CHECKING:
    import pretty_midi

PITCH, STEP, DURATION, VELOCITY = range(4)
"""Column indices of a note array."""

MIDI_PITCHES = 128
HEADER_BYTES = 14  # MThd, its length (6) and format, tracks, division
WRITE_RESOLUTION = 960  # ticks per beat; at 120 BPM one tick is 0.52 ms
WRITE_TEMPO = 120.0
READ_MAX_TICK = 10_000_000  # pretty_midi.pretty_midi.MAX_TICK: a larger last tick reads as corrupt


@dataclass(frozen=True, slots=True)
class Note:
    """One sounding note, times in seconds."""

    pitch: int
    start: float
    end: float
    velocity: int = 80

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class Track:
    """A named group of notes written as one MIDI track/instrument."""

    name: str
    notes: list[Note] = field(default_factory=list)
    program: int = 0
    is_drum: bool = False


def import_pretty_midi() -> ModuleType:
    """pretty_midi, imported quietly: it imports pyfluidsynth, which prints to stdout when $CI
    is set, and stdout carries `--json` output and the daemon's `ready` line."""
    with redirect_stdout(io.StringIO()):
        import pretty_midi
    return pretty_midi


def sort_notes(notes: Iterable[Note]) -> list[Note]:
    """Onset order; simultaneous notes lowest pitch first, so chords are reproducible."""
    return sorted(notes, key=lambda n: (n.start, n.pitch, n.end))


UNISON_TOLERANCE = 0.005  # seconds: same-pitch onsets closer than this are one doubled note


def resolve_unisons(notes: Iterable[Note]) -> list[Note]:
    """Make every pitch sound at most once at a time, as on one MIDI channel.

    Merging instruments can stack two notes of the same pitch (a doubling) or overlap them;
    one channel cannot say which note-off ends which.  A doubling (onsets within 5 ms) becomes
    one note with the longer end and the louder velocity; an overlap ends the earlier note where
    the later one starts.  Returns onset-ordered notes.
    """
    result: list[Note] = []
    last_by_pitch: dict[int, int] = {}  # pitch -> index in result of its latest note
    for note in sort_notes(notes):
        index = last_by_pitch.get(note.pitch)
        previous = result[index] if index is not None else None
        if previous is not None and note.start < previous.end:
            if note.start - previous.start <= UNISON_TOLERANCE:
                result[index] = Note(previous.pitch, previous.start, max(previous.end, note.end),
                                     max(previous.velocity, note.velocity))
                continue
            result[index] = Note(previous.pitch, previous.start, note.start, previous.velocity)
        last_by_pitch[note.pitch] = len(result)
        result.append(note)
    return result


def load_pretty_midi(path: str | os.PathLike) -> "pretty_midi.PrettyMIDI":
    """Parse a MIDI file, turning every failure into one MidiFileError naming the file and why.

    The chunk structure is checked first (see midi_structure_problem), because mido reports a
    truncated or lying header as a bare EOFError or IndexError.  pretty_midi's warnings (tempo
    events on other tracks...) are silenced: the file is read anyway, and stderr carries only
    livegen's own one-line errors.
    """
    path = Path(path)
    data = read_input_file(path, "MIDI file")
    problem = midi_structure_problem(data)
    if problem is not None:
        raise MidiFileError(path, f"not a readable MIDI file ({problem})")
    pretty_midi = import_pretty_midi()  # heavy import, only needed here
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pretty_midi.PrettyMIDI(io.BytesIO(data))
    except Exception as exc:  # pretty_midi/mido raise many types on bad bytes
        raise MidiFileError(path, f"not a readable MIDI file ({_parse_failure(exc)})") from exc


def read_input_file(path: Path, what: str) -> bytes:
    """The bytes of an input file; MidiFileError saying plainly why not (missing, folder, denied)."""
    if path.is_dir():
        raise MidiFileError(path, f"is a directory, not a {what}")
    if not path.exists():
        raise MidiFileError(path, "no such file")
    if not path.is_file():
        raise MidiFileError(path, f"not a regular file (a device or pipe?), not a {what}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MidiFileError(path, f"cannot read ({exc.strerror or exc})") from exc


def midi_structure_problem(data: bytes) -> str | None:
    """Why the chunks of a Standard MIDI File do not add up, or None if they do.

    Walks the header and the declared tracks without parsing events, so truncation at any
    offset, header lengths and track counts that lie, and track lengths past the end of the
    file are reported as such (mido would say EOFError).  Bytes after the last declared track
    are ignored, as mido ignores them.
    """
    if not data:
        return "empty file"
    if data[:4] != b"MThd":
        return "not a MIDI file: it does not start with MThd"
    if len(data) < HEADER_BYTES:
        return f"truncated: the header needs {HEADER_BYTES} bytes, the file has {len(data)}"
    length, _format, tracks, division = struct.unpack(">IHHH", data[4:HEADER_BYTES])
    if length < 6:
        return f"corrupt header: it declares {length} bytes, at least 6 are needed"
    if 8 + length > len(data):
        return f"truncated or corrupt header: it declares {length} bytes, {len(data) - 8} follow"
    if tracks == 0:
        return "no tracks: the header declares 0"
    if division & 0x8000:
        return "SMPTE time division is not supported, only ticks per beat"
    if division == 0:
        return "corrupt header: 0 ticks per beat"
    offset = 8 + length
    for number in range(1, tracks + 1):
        left = len(data) - offset
        if left <= 0:
            return f"truncated: the header declares {tracks} tracks, the file ends after {number - 1}"
        if left < 8:
            return f"truncated inside the chunk header of track {number}"
        kind, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "big")
        if kind != b"MTrk":
            return f"corrupt: track {number} should start with MTrk at byte {offset}, found {kind!r}"
        if size > left - 8:
            return f"truncated: track {number} declares {size} bytes, {left - 8} follow"
        if size == 0:
            return f"corrupt: track {number} is empty (0 bytes, not even an end-of-track event)"
        offset += 8 + size
    return None


def _parse_failure(exc: Exception) -> str:
    """A parser exception as a reason a user can act on."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if isinstance(exc, EOFError):
        return "truncated or corrupt: a track ends in the middle of an event"
    if isinstance(exc, ZeroDivisionError):
        return "corrupt timing: a tempo of 0"
    if isinstance(exc, (IndexError, KeyError, struct.error)):
        return f"corrupt event data ({type(exc).__name__}: {text})" if text else "corrupt event data"
    return text or type(exc).__name__


def read_midi(path: str | os.PathLike, instrument: int | str | None = None) -> list[Note]:
    """Read a MIDI file into one onset-ordered note list, for the model.

    By default every non-drum instrument is merged; ``instrument`` picks one by index or by
    (case-insensitive substring of) its track or GM program name.  Same-pitch overlaps are
    resolved (see resolve_unisons).  Raises MidiFileError naming the file and the reason for
    anything unreadable or without notes.
    """
    path = Path(path)
    midi = load_pretty_midi(path)
    instruments = [inst for inst in midi.instruments if not inst.is_drum]
    if instrument is not None:
        instruments = [_pick_instrument(path, midi.instruments, instrument)]
    notes = [
        Note(int(n.pitch), float(n.start), float(n.end), int(n.velocity))
        for inst in instruments
        for n in inst.notes
    ]
    if not notes:
        raise MidiFileError(path, "contains no notes" + ("" if instrument is None else f" in instrument {instrument!r}"))
    return resolve_unisons(notes)


def instrument_track(instrument: "pretty_midi.Instrument", index: int) -> Track:
    """One pretty_midi instrument as a Track, keeping its program and drum flag."""
    pretty_midi = import_pretty_midi()

    if instrument.name:
        name = instrument.name
    elif instrument.is_drum:
        name = f"{index}: drums"
    else:
        name = f"{index}: {pretty_midi.program_to_instrument_name(int(instrument.program))}"
    notes = [Note(int(n.pitch), float(n.start), float(n.end), int(n.velocity)) for n in instrument.notes]
    return Track(name=name, notes=sort_notes(notes), program=int(instrument.program), is_drum=bool(instrument.is_drum))


def read_tracks(path: str | os.PathLike) -> list[Track]:
    """Read a MIDI file as one Track per instrument (drums included, empty ones dropped), for
    rendering and plotting.  Raises MidiFileError naming the file for anything unreadable or
    without notes.
    """
    midi = load_pretty_midi(path)
    tracks = [instrument_track(inst, i) for i, inst in enumerate(midi.instruments) if inst.notes]
    if not tracks:
        raise MidiFileError(Path(path), "contains no notes")
    return tracks


def prepare_output(path: str | os.PathLike) -> Path:
    """Create the parent folders of an output file; OutputFileError naming it if we cannot."""
    path = Path(path)
    if path.is_dir():
        raise OutputFileError(path, "is a directory")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputFileError(path, f"cannot create folder {path.parent} ({exc.strerror or exc})") from exc
    return path


def _pick_instrument(path: Path, instruments: list, wanted: int | str):
    pretty_midi = import_pretty_midi()

    def label(index: int, inst) -> str:
        program = "drums" if inst.is_drum else pretty_midi.program_to_instrument_name(inst.program)
        return f"{index}: {inst.name or '(unnamed)'} [{program}]"

    if isinstance(wanted, str) and wanted.isdigit():
        wanted = int(wanted)
    if isinstance(wanted, int):
        if 0 <= wanted < len(instruments):
            return instruments[wanted]
    else:
        needle = wanted.lower()
        for index, inst in enumerate(instruments):
            if needle in label(index, inst).lower():
                return inst
    available = "; ".join(label(i, inst) for i, inst in enumerate(instruments)) or "none"
    raise MidiFileError(path, f"no instrument {wanted!r} (instruments: {available})")


def notes_to_array(notes: Sequence[Note]) -> np.ndarray:
    """Notes (any order) to a float64 array of shape (N, 4): pitch, step, duration, velocity.

    The first note's step is 0; keep ``notes[0].start`` to restore absolute times.
    """
    ordered = sort_notes(notes)
    array = np.zeros((len(ordered), 4), dtype=np.float64)
    if not ordered:
        return array
    starts = np.array([n.start for n in ordered])
    array[:, PITCH] = [n.pitch for n in ordered]
    array[1:, STEP] = np.diff(starts)
    array[:, DURATION] = [n.end - n.start for n in ordered]
    array[:, VELOCITY] = [n.velocity for n in ordered]
    return array


def array_to_notes(array: np.ndarray, start: float = 0.0) -> list[Note]:
    """Inverse of notes_to_array: the first onset is ``start`` plus the first row's step."""
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"note array must have shape (N, 4), got {array.shape}")
    onsets = start + np.cumsum(array[:, STEP])
    return [
        Note(
            pitch=int(np.clip(round(row[PITCH]), 0, MIDI_PITCHES - 1)),
            start=float(onset),
            end=float(onset + max(row[DURATION], 0.0)),
            velocity=int(np.clip(round(row[VELOCITY]), 1, 127)),
        )
        for row, onset in zip(array, onsets)
    ]


def write_resolution(last_seconds: float) -> int:
    """Ticks per beat for a file lasting ``last_seconds``: WRITE_RESOLUTION, or less when the
    last tick would pass READ_MAX_TICK, above which pretty_midi refuses a file as corrupt."""
    ticks_per_second_per_ppq = WRITE_TEMPO / 60.0
    fits = int((READ_MAX_TICK - 1) / (ticks_per_second_per_ppq * max(last_seconds, 1e-9)))
    return max(1, min(WRITE_RESOLUTION, fits))


def write_midi(path: str | os.PathLike, tracks: Sequence[Track]) -> None:
    """Write tracks to a type-1 MIDI file at a resolution fine enough to keep onsets within 1 ms.

    Same-pitch overlaps within a track are resolved first (see resolve_unisons), so every
    note-off in the file ends the note it belongs to.  Past about 87 minutes the resolution
    coarsens (see write_resolution), so the file stays readable.
    """
    pretty_midi = import_pretty_midi()

    last = max((max(float(n.end), float(n.start)) for t in tracks for n in t.notes), default=0.0)
    midi = pretty_midi.PrettyMIDI(resolution=write_resolution(last), initial_tempo=WRITE_TEMPO)
    for track in tracks:
        instrument = pretty_midi.Instrument(program=track.program, is_drum=track.is_drum, name=track.name)
        for note in resolve_unisons(track.notes):
            instrument.notes.append(
                pretty_midi.Note(
                    velocity=int(np.clip(note.velocity, 1, 127)),
                    pitch=int(note.pitch),
                    start=max(float(note.start), 0.0),
                    end=max(float(note.end), float(note.start), 0.0),
                )
            )
        midi.instruments.append(instrument)
    path = prepare_output(path)
    try:
        midi.write(str(path))
    except OSError as exc:
        raise OutputFileError(path, f"cannot write ({exc.strerror or exc})") from exc
