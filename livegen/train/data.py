"""Training data: find files, parse them once into cached note arrays, split by piece.

Sources are MIDI files (``.mid``, ``.midi``) from folders and globs, and the scores music21 ships
(MusicXML, ABC, Humdrum kern), converted to seconds at their tempo marks.  Every file becomes one
or more *pieces* (an ABC file may hold a whole book of tunes), each an (N, 4) note array in the
model's view: pitch, step, duration, velocity (see livegen.notes).

Parsing runs in worker processes with a progress bar; results are cached as ``.npz`` (never
pickle) keyed by the file's content, suffix and PARSER_VERSION, so the second run is instant.  A
file that cannot be read or has no notes is skipped and listed, never fatal.

Piece ids are stable strings: the absolute path of a MIDI file, ``music21:<path in the corpus>``
for corpus scores, with ``#k`` appended for the k-th piece of a multi-piece file.  The split
(train / validation / test) is by piece, with a fixed seed, and is written as ``split.json`` next
to the model so evaluation can find the same held-out pieces later.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from livegen.errors import LivegenError, TrainingDataError
from livegen.jsonfile import read_json
from livegen.notes import Note, notes_to_array, read_midi, resolve_unisons

PARSER_VERSION = 1
MIDI_SUFFIXES = (".mid", ".midi")
SCORE_SUFFIXES = (".mxl", ".xml", ".musicxml", ".abc", ".krn")
CORPUS_PREFIX = "music21:"
DEFAULT_BPM = 100.0  # scores without a tempo mark
DEFAULT_VELOCITY = 80  # scores without dynamics; augmentation varies it
MIN_NOTES = 8  # shorter pieces teach nothing and are skipped
SPLIT_FILE = "split.json"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Piece:
    """One piece of music in the model's view."""

    id: str
    notes: np.ndarray  # (N, 4) float32: pitch, step, duration, velocity
    quantised: bool  # timing from a score grid, not a performance (augmentation humanises it)


@dataclass
class Ingested:
    """What ingestion found: the usable pieces and the files it had to skip, with reasons."""

    pieces: list[Piece] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file id, reason)
    files: int = 0

    @property
    def notes(self) -> int:
        return sum(len(p.notes) for p in self.pieces)

    def nothing_usable(self, what: str = "files") -> TrainingDataError:
        """The error for an ingestion that kept no piece, naming the first skipped file and why."""
        first = f" (e.g. {self.skipped[0][0]}: {self.skipped[0][1]})" if self.skipped else ""
        return TrainingDataError(f"none of the {self.files} {what} gave a usable piece{first}")

    def summary(self, limit: int = 10) -> str:
        lines = [f"{self.files} files -> {len(self.pieces)} pieces, {self.notes} notes; {len(self.skipped)} skipped"]
        for file_id, reason in self.skipped[:limit]:
            lines.append(f"  skipped {file_id}: {reason}")
        if len(self.skipped) > limit:
            lines.append(f"  ... and {len(self.skipped) - limit} more")
        return "\n".join(lines)


# --- finding files -----------------------------------------------------------------------------


def find_files(patterns: Sequence[str], suffixes: Sequence[str] = MIDI_SUFFIXES + SCORE_SUFFIXES) -> list[str]:
    """Folders (searched recursively), globs and files -> sorted absolute paths of music files.

    A file named explicitly is kept whatever its suffix (so a corrupt file is reported, not
    silently ignored); a folder or glob contributes only files with a known suffix.  A pattern
    that matches nothing raises TrainingDataError.
    """
    found: set[str] = set()
    for pattern in patterns:
        path = Path(os.path.expanduser(pattern))
        if path.is_dir():
            matches = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes]
        elif path.is_file():
            matches = [path]
        else:
            matches = [Path(p) for p in glob.glob(str(path), recursive=True)]
            matches = [p for p in matches if p.is_file() and p.suffix.lower() in suffixes]
            if not matches and not glob.has_magic(str(path)):
                raise TrainingDataError(f"--data {pattern}: no such file or folder")
        if not matches:
            raise TrainingDataError(f"--data {pattern}: no MIDI or score files found ({', '.join(suffixes)})")
        found.update(str(p.resolve()) for p in matches)
    return sorted(found)


def corpus_root() -> Path:
    try:
        import music21
    except ImportError as exc:
        raise TrainingDataError("--corpus music21 needs the music21 package (pip install 'livegen[train]')") from exc
    return Path(music21.__file__).parent / "corpus"


def corpus_files(include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """File ids (``music21:<relative path>``) of the corpus music21 ships.

    ``include``: keep only files whose relative path contains one of these substrings
    (e.g. ``bach/``, ``essenFolksong``); empty keeps everything.  ``exclude``: then drop files
    whose path contains one of these (styles held out to test how a model generalises).
    """
    root = corpus_root()
    preference = {suffix: rank for rank, suffix in enumerate(SCORE_SUFFIXES + MIDI_SUFFIXES)}
    chosen: dict[Path, Path] = {}  # one file per work: a work in .mxl and .krn would leak across the split
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in preference:
            continue
        relative = path.relative_to(root).as_posix()
        if include and not any(part in relative for part in include):
            continue
        if any(part in relative for part in exclude):
            continue
        work = path.with_suffix("")
        if work not in chosen or preference[path.suffix.lower()] < preference[chosen[work].suffix.lower()]:
            chosen[work] = path
    ids = sorted(CORPUS_PREFIX + p.relative_to(root).as_posix() for p in chosen.values())
    if not ids:
        raise TrainingDataError(f"no music21 corpus files match {list(include)}"
                                + (f" without {list(exclude)}" if exclude else ""))
    return ids


def file_path(file_id: str) -> Path:
    """A file id (absolute path or ``music21:...``) -> the path on this machine."""
    if file_id.startswith(CORPUS_PREFIX):
        return corpus_root() / file_id[len(CORPUS_PREFIX):]
    return Path(file_id)


def file_of(piece_id: str) -> str:
    """The file id a piece id comes from (drops a ``#k`` suffix)."""
    head, sep, tail = piece_id.rpartition("#")
    return head if sep and tail.isdigit() else piece_id


# --- parsing -------------------------------------------------------------------------------------


def parse_file(path: str | os.PathLike) -> list[tuple[str, np.ndarray, bool]]:
    """One file -> [(suffix, notes (N, 4), quantised)], suffix '' or '#k' per piece.

    Raises LivegenError (MidiFileError or TrainingDataError) with a reason for unusable files.
    """
    import warnings

    warnings.filterwarnings("ignore", module="pretty_midi")  # odd tempo events etc.: read anyway
    path = Path(path)
    if path.suffix.lower() in MIDI_SUFFIXES:
        notes = read_midi(path)
        array = notes_to_array(notes)
        # A file whose velocities barely vary was written from a score, not played.
        quantised = len(np.unique(array[:, 3])) <= 2
        return [("", array, quantised)]
    return _parse_score(path)


def _parse_score(path: Path) -> list[tuple[str, np.ndarray, bool]]:
    import warnings

    import music21

    warnings.filterwarnings("ignore", module="music21")  # overfull measures etc.: parsed anyway
    if not path.is_file():
        raise TrainingDataError(f"{path}: no such file")
    try:
        parsed = music21.converter.parse(str(path))
    except Exception as exc:  # music21 raises many types on bad input
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise TrainingDataError(f"{path}: not a readable score ({reason})") from exc
    scores = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
    pieces = []
    for index, score in enumerate(scores):
        try:
            notes = score_to_notes(score)
        except Exception:  # one broken tune in a book must not lose the others
            continue
        if notes:
            suffix = f"#{index}" if len(scores) > 1 else ""
            pieces.append((suffix, notes_to_array(notes), True))
    if not pieces:
        raise TrainingDataError(f"{path}: score contains no notes")
    return pieces


def score_to_notes(score) -> list[Note]:
    """A music21 score -> notes in seconds.

    Tempo from the score's metronome marks (DEFAULT_BPM before the first one), chords become
    several notes at one onset, ties are merged into one note, grace notes are skipped, and
    velocity follows the part's dynamics (DEFAULT_VELOCITY where there are none).
    """
    from music21 import dynamics, tempo

    to_seconds = _tempo_map(score.flatten().getElementsByClass(tempo.MetronomeMark))
    parts = list(score.parts) or [score]
    notes: list[Note] = []
    for part in parts:
        flat = part.flatten()
        levels = sorted(
            (float(d.offset), int(np.clip(round((d.volumeScalar or 0.0) * 127), 1, 127)))
            for d in flat.getElementsByClass(dynamics.Dynamic)
            if d.volumeScalar is not None
        )
        level_offsets = np.array([o for o, _ in levels])
        tied: dict[int, int] = {}  # midi pitch -> index in `spans` of a note whose tie is open
        spans: list[list] = []  # [pitch, start_q, end_q, velocity]
        for element in flat.notes:
            if element.duration.isGrace or element.quarterLength <= 0:
                continue
            start = float(element.offset)
            end = start + float(element.quarterLength)
            members = element.notes if element.isChord else [element]
            velocity = DEFAULT_VELOCITY
            if levels:
                at = np.searchsorted(level_offsets, start + 1e-9) - 1
                if at >= 0:
                    velocity = levels[at][1]
            for member in members:
                pitch_obj = getattr(member, "pitch", None)
                if pitch_obj is None:
                    continue  # unpitched percussion
                pitch = int(pitch_obj.midi)
                if not 0 <= pitch <= 127:
                    continue
                tie = member.tie or (element.tie if element.isChord else None)
                kind = tie.type if tie is not None else None
                open_index = tied.get(pitch)
                if kind in ("stop", "continue") and open_index is not None and abs(spans[open_index][2] - start) < 1e-6:
                    spans[open_index][2] = end
                    if kind == "stop":
                        del tied[pitch]
                    continue
                spans.append([pitch, start, end, velocity])
                if kind in ("start", "continue"):
                    tied[pitch] = len(spans) - 1
                else:
                    tied.pop(pitch, None)
        notes.extend(Note(p, to_seconds(s), to_seconds(e), v) for p, s, e, v in spans)
    return resolve_unisons(notes)


def _tempo_map(marks: Iterable):
    """Metronome marks -> a function from quarter-note offsets to seconds (piecewise linear)."""
    changes: dict[float, float] = {}
    for mark in marks:
        try:
            seconds_per_quarter = mark.secondsPerQuarter()
        except Exception:  # a mark with no usable number or referent
            continue
        if seconds_per_quarter and seconds_per_quarter > 0:
            changes[float(mark.offset)] = float(seconds_per_quarter)
    if 0.0 not in changes:
        changes[0.0] = 60.0 / DEFAULT_BPM if not changes else changes[min(changes)]
    offsets = np.array(sorted(changes))
    rates = np.array([changes[o] for o in offsets])
    elapsed = np.concatenate([[0.0], np.cumsum(np.diff(offsets) * rates[:-1])])

    def to_seconds(quarters: float) -> float:
        i = max(int(np.searchsorted(offsets, quarters, side="right")) - 1, 0)
        return float(elapsed[i] + (quarters - offsets[i]) * rates[i])

    return to_seconds


# --- cache and ingestion -------------------------------------------------------------------------


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("livegen")) / "notes"


def _cache_path(cache_dir: Path, path: Path) -> Path:
    """Keyed by the file's bytes (and its suffix, which picks the parser), not its path or mtime:
    reinstalling music21 or moving a MIDI folder rewrites every mtime, and a corpus of 3,000 scores
    takes a quarter of an hour to parse again on 2 cores.  Hashing it takes about a second."""
    content = hashlib.sha1(path.read_bytes()).hexdigest()
    key = f"{PARSER_VERSION}|{path.suffix.lower()}|{content}"
    return cache_dir / (hashlib.sha1(key.encode()).hexdigest()[:20] + ".npz")


def _load_cached(cache_file: Path):
    """-> ('ok', pieces) or ('error', reason), or None when not cached or unreadable."""
    try:
        with np.load(cache_file, allow_pickle=False) as data:
            if "error" in data:
                return "error", str(data["error"])
            suffixes = [str(s) for s in data["suffixes"]]
            quantised = [bool(q) for q in data["quantised"]]
            return "ok", [(s, data[f"notes_{i}"], q) for i, (s, q) in enumerate(zip(suffixes, quantised))]
    except (OSError, ValueError, KeyError):
        return None


def _store(cache_file: Path, result) -> None:
    status, value = result
    if status == "error":
        arrays = {"error": np.array(value)}
    else:
        arrays = {"suffixes": np.array([s for s, _, _ in value], dtype=str).reshape(-1),
                  "quantised": np.array([q for _, _, q in value], dtype=bool)}
        arrays.update({f"notes_{i}": a.astype(np.float32) for i, (_, a, _) in enumerate(value)})
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    temporary = cache_file.with_name(f"{cache_file.stem}.{os.getpid()}.tmp.npz")
    np.savez(temporary, **arrays)
    os.replace(temporary, cache_file)  # atomic: concurrent ranks or runs never see half a file


def _parse_one(file_id: str, cache_dir: str | None):
    """Worker: parse (or read from cache) one file -> ('ok', pieces) | ('error', reason)."""
    path = file_path(file_id)
    cache_file = None
    if cache_dir is not None and path.is_file():
        cache_file = _cache_path(Path(cache_dir), path)
        cached = _load_cached(cache_file) if cache_file.is_file() else None
        if cached is not None:
            return cached
    try:
        result = ("ok", parse_file(path))
    except LivegenError as exc:
        result = ("error", getattr(exc, "reason", None) or str(exc))
    except Exception as exc:  # any parser crash is a skipped file, never a failed run
        result = ("error", f"{type(exc).__name__}: {str(exc).strip()[:200]}")
    if cache_file is not None:
        try:
            _store(cache_file, result)
        except OSError:
            pass  # a read-only cache only costs speed
    return result


def ingest(
    file_ids: Sequence[str],
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool = True,
    min_notes: int = MIN_NOTES,
) -> Ingested:
    """Parse files (in ``workers`` processes; 0 or 1 = in this process) into pieces.

    Unreadable, empty and too-short files are skipped and listed in the result.
    """
    from tqdm import tqdm

    cache = str(cache_dir) if cache_dir is not None else None
    results: dict[str, tuple] = {}
    if cache is not None:  # cache hits need no worker process
        for file_id in file_ids:
            path = file_path(file_id)
            if path.is_file():
                cache_file = _cache_path(Path(cache), path)
                cached = _load_cached(cache_file) if cache_file.is_file() else None
                if cached is not None:
                    results[file_id] = cached
    todo = [f for f in file_ids if f not in results]
    bar = tqdm(total=len(todo), desc="parsing", unit="file", disable=not progress or not todo, leave=False)
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # never fork a process that holds torch threads
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=context) as pool:
            futures = {pool.submit(_parse_one, f, cache): f for f in todo}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                bar.update()
    else:
        for file_id in todo:
            results[file_id] = _parse_one(file_id, cache)
            bar.update()
    bar.close()

    ingested = Ingested(files=len(file_ids))
    for file_id in file_ids:  # input order, so runs are reproducible
        status, value = results[file_id]
        if status == "error":
            ingested.skipped.append((file_id, value))
            continue
        kept = 0
        for suffix, notes, quantised in value:
            if len(notes) >= min_notes:
                ingested.pieces.append(Piece(file_id + suffix, np.asarray(notes, dtype=np.float32), quantised))
                kept += 1
        if not kept:
            ingested.skipped.append((file_id, f"fewer than {min_notes} notes"))
    return ingested


# --- split ---------------------------------------------------------------------------------------


def content_key(notes: np.ndarray, length: int = 32) -> str:
    """The intervals between the first ``length`` pitches: equal for a tune and its transposed copies."""
    pitches = np.asarray(notes)[:length, 0].astype(int)
    return ",".join(map(str, np.diff(pitches))) + f"/{min(len(notes), length)}"


def split_pieces(
    piece_ids: Sequence[str],
    seed: int = 0,
    validation: float = 0.05,
    test: float = 0.05,
    keys: dict[str, str] | None = None,
) -> dict[str, list[str]]:
    """Assign whole pieces to train / validation / test with a fixed seed.

    ``keys`` (piece id -> content key, see content_key) keeps duplicates together: folk-song
    books hold the same tune more than once, and a copy in training would leak into the test.
    The assignment depends only on the sorted ids, their keys and the seed.  Validation and test
    get at least one group each when there are at least three groups.
    """
    if not 0 <= validation < 1 or not 0 <= test < 1 or validation + test >= 1:
        raise TrainingDataError(f"split fractions must leave training data (validation {validation}, test {test})")
    ids = sorted(set(piece_ids))
    groups: dict[str, list[str]] = {}
    for piece_id in ids:
        groups.setdefault((keys or {}).get(piece_id, piece_id), []).append(piece_id)
    members = [groups[k] for k in sorted(groups)]
    order = np.random.default_rng(seed).permutation(len(members))
    n = len(ids)
    want_val = max(1, round(n * validation)) if validation > 0 and len(members) >= 3 else 0
    want_test = max(1, round(n * test)) if test > 0 and len(members) >= 3 else 0
    split: dict[str, list[str]] = {"validation": [], "test": [], "train": []}
    for index in order:
        name = "validation" if len(split["validation"]) < want_val else "test" if len(split["test"]) < want_test else "train"
        split[name].extend(members[index])
    return {name: sorted(split[name]) for name in ("validation", "test", "train")}


def extend_split(split: dict, pieces: Sequence[Piece]) -> tuple[dict[str, list[str]], list[str]]:
    """Add the pieces a recorded split does not list to its training side.

    Validation and test stay exactly the earlier release's, so the two releases are measured on the
    same pieces.  A new piece that copies a validation or test piece (same content key: folk books
    repeat tunes) is left out and returned, and a piece listed as a held-out style is never added.
    """
    listed = {i for k in SPLITS for i in split[k]} | set(split.get("held_out_styles", []))
    evaluated = set(split["validation"]) | set(split["test"])
    evaluated_keys = {content_key(p.notes) for p in pieces if p.id in evaluated}
    new = [p for p in pieces if p.id not in listed]
    leaked = {p.id for p in new if content_key(p.notes) in evaluated_keys}
    extended = {k: list(split[k]) for k in SPLITS}
    extended["train"] = sorted(set(extended["train"]) | {p.id for p in new if p.id not in leaked})
    return extended, sorted(leaked)


def write_split(directory: str | os.PathLike, split: dict[str, list[str]], **info) -> Path:
    path = Path(directory) / SPLIT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**info, **{k: split[k] for k in SPLITS}}, indent=1) + "\n")
    return path


def read_split(directory: str | os.PathLike) -> dict:
    path = Path(directory)
    path = path if path.suffix == ".json" else path / SPLIT_FILE
    if not path.is_file():
        raise TrainingDataError(f"{path}: no split file (train the model with `livegen train` to write one)")
    data = read_json(path, TrainingDataError)
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) and all(isinstance(i, str) for i in data[k]) for k in SPLITS
    ):
        raise TrainingDataError(f"{path}: expected lists of piece ids {', '.join(SPLITS)}")
    return data


def select(pieces: Sequence[Piece], ids: Iterable[str]) -> list[Piece]:
    wanted = set(ids)
    return [p for p in pieces if p.id in wanted]
