"""Session memory: what the player played this session, as a PPM model over intervals and rhythm.

Pachet's Continuator answers with the player's own material; the LSTM forgets a motif ten
phrases later.  The memory counts every note the *player* plays (never livegen's answers) as a
symbol (pitch interval from the note before, relative rhythm) and predicts the next symbol from
the longest context of earlier intervals it has seen (rhythm is predicted, not matched, so a
motif played with rubato still matches; ``context_rhythm`` matches both), blending the orders as interpolated PPM does
(Witten-Bell escapes, down to a uniform floor).  Keyed on intervals and on steps in units of the
running tempo, so a motif played a fifth higher or twice as fast still matches.

* ``SessionMemory``: the counts, bounded to the last ``capacity`` notes (the oldest note's
  n-grams are uncounted when it drops out), cleared by ``clear()``, thread-safe, saved and loaded
  with ``save``/``load`` (atomic write; a corrupt, truncated or foreign file raises MemoryFileError).
* ``Cursor``: a position in a stream of notes (last pitch, last symbols, running tempo).  The
  memory owns one for learning; an answer advances a copy of it and learns nothing.
* ``Prediction``: the next symbol's probabilities as an (intervals, rhythms) matrix, and how
  confident the memory is (how long and how well-seen the matched context is).

numpy only: the engine may import it without torch.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import tempfile
import threading
from collections import deque
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from livegen.errors import LivegenError
from livegen.model.timebase import TempoTracker
from livegen.notes import PITCH, STEP

FORMAT = "livegen-memory"
FORMAT_VERSION = 1
BREAK = -1  # a symbol that ends every context: a session boundary in a loaded memory
DENSE_FOLLOWERS = 12  # a context with more followers adds them as one numpy operation (measured)


class MemoryFileError(LivegenError, ValueError):
    """A memory file that cannot be read: corrupt, truncated, foreign or of another version."""


@dataclass(frozen=True)
class MemoryConfig:
    order: int = 6  # longest context, in notes (intervals) before the predicted one
    capacity: int = 4096  # notes remembered; older ones are forgotten
    interval_limit: int = 36  # larger intervals are counted as +-this
    rhythm_per_octave: int = 3  # rhythm classes per doubling of the step (~26 % wide)
    rhythm_octaves: int = 4  # steps from unit/2^octaves to unit*2^octaves have their own class
    chord_seconds: float = 0.01  # shorter steps are chord notes (rhythm class 0)
    context_rhythm: bool = False  # contexts are intervals only (False) or intervals and rhythm classes

    def key(self, symbol: int) -> int:
        """What a symbol contributes to a context: its interval, or the whole symbol."""
        return symbol if self.context_rhythm or symbol == BREAK else symbol // self.rhythms

    def __post_init__(self) -> None:
        for name in ("order", "capacity", "interval_limit", "rhythm_per_octave", "rhythm_octaves"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"memory {name} must be a positive integer, got {value!r}")
        if not self.chord_seconds > 0:
            raise ValueError(f"memory chord_seconds must be > 0, got {self.chord_seconds!r}")
        if not isinstance(self.context_rhythm, bool):
            raise ValueError(f"memory context_rhythm must be true or false, got {self.context_rhythm!r}")

    @property
    def intervals(self) -> int:
        return 2 * self.interval_limit + 1

    @property
    def rhythms(self) -> int:
        return 2 * self.rhythm_per_octave * self.rhythm_octaves + 2  # chord class + the log classes

    @property
    def symbols(self) -> int:
        return self.intervals * self.rhythms

    def rhythm_ratios(self) -> np.ndarray:
        """Step / unit at the centre of each rhythm class (0 for the chord class)."""
        half = self.rhythm_per_octave * self.rhythm_octaves
        return np.concatenate([[0.0], 2.0 ** ((np.arange(1, self.rhythms) - 1 - half) / self.rhythm_per_octave)])


class Cursor:
    """Where a stream of notes stands: its last pitch, its last symbols, its running tempo."""

    __slots__ = ("last_pitch", "context", "tempo")

    def __init__(self, order: int, chord_seconds: float) -> None:
        self.last_pitch: int | None = None
        self.context: list[int] = []
        self.tempo = TempoTracker(chord_seconds=chord_seconds)

    def copy(self) -> "Cursor":
        other = Cursor.__new__(Cursor)
        other.last_pitch, other.context, other.tempo = self.last_pitch, list(self.context), self.tempo.copy()
        return other


@dataclass
class Prediction:
    probs: np.ndarray  # (intervals, rhythms): P(next interval, next rhythm class), sums to 1
    confidence: float  # 0 = nothing matched .. 1 = the longest context, always followed the same way
    order: int  # length of the longest context matched
    last_pitch: int | None  # the pitch the intervals count from (None: no note yet)
    unit: float  # seconds per unit of the stream's running tempo


def interval_pitches(intervals: np.ndarray, last_pitch: int | None, limit: int, floor: float = 1e-4) -> np.ndarray:
    """P(pitch) (128,) from P(interval) (2 * limit + 1,) after ``last_pitch``; ``floor`` of the
    mass is spread over every pitch, so no pitch is impossible (uniform without a last pitch)."""
    return add_interval_pitches(np.zeros(128), 1.0, intervals, last_pitch, limit, floor)


def add_interval_pitches(out: np.ndarray, weight: float, intervals: np.ndarray, last_pitch: int | None,
                         limit: int, floor: float = 1e-4) -> np.ndarray:
    """``out += weight · interval_pitches(intervals, ...)`` in place: a mixture in four array operations."""
    if last_pitch is not None:
        low = last_pitch - limit
        first, stop = max(low, 0), min(last_pitch + limit + 1, 128)
        reachable = intervals[first - low : stop - low]  # (probabilities are >= 0: a zero sum is all zeros)
        total = reachable.sum()
        if total > 0:
            out += weight * floor / 128.0
            out[first:stop] += reachable * (weight * (1.0 - floor) / total)
            return out
    out += weight / 128.0
    return out


class SessionMemory:
    """Interpolated PPM counts over (interval, rhythm) symbols of the player's notes."""

    def __init__(self, config: MemoryConfig | None = None) -> None:
        self.config = config = config or MemoryConfig()
        self._lock = threading.Lock()
        self._ratios = config.rhythm_ratios()
        self._log_edges = None
        self.clear()

    # -- learning -----------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget everything (the CC, ``--memory-reset``, a preset with ``memory_reset``)."""
        c = self.config
        with self._lock:
            self._history: deque[int] = deque()  # symbols, oldest first (BREAK between sessions)
            self._keys: deque[int] = deque()  # config.key of each symbol of _history (what contexts are made of)
            self._tables: list[dict[tuple[int, ...], list]] = [dict() for _ in range(c.order + 1)]  # [k][ctx] = [total, {sym: n}]
            self._unigram = np.zeros(c.symbols)
            self._unigram_total = 0  # _unigram.sum() and np.count_nonzero(_unigram), kept as it changes
            self._unigram_distinct = 0
            self.cursor = Cursor(c.order, c.chord_seconds)
            self.notes_seen = 0

    def __len__(self) -> int:
        return sum(1 for s in self._history if s != BREAK)

    def symbol(self, cursor: Cursor, row) -> int | None:
        """The symbol of one note row read at ``cursor`` (None for the first note of a stream)."""
        c = self.config
        pitch = int(round(float(row[PITCH])))
        step = float(row[STEP])
        if cursor.last_pitch is None:
            return None
        interval = min(max(pitch - cursor.last_pitch, -c.interval_limit), c.interval_limit) + c.interval_limit
        return interval * c.rhythms + self.rhythm_class(step, cursor.tempo.unit)

    def rhythm_class(self, step: float, unit: float) -> int:
        c = self.config
        if not step >= c.chord_seconds or not math.isfinite(step):
            return 0
        half = c.rhythm_per_octave * c.rhythm_octaves
        position = round(math.log2(step / unit) * c.rhythm_per_octave)
        return 1 + half + min(max(position, -half), half)

    def advance(self, cursor: Cursor, rows: np.ndarray) -> list[int]:
        """Move ``cursor`` over note rows (N, 4); returns their symbols (nothing is counted)."""
        out, c = [], self.config
        for row in np.asarray(rows, dtype=np.float64).reshape(-1, 4).tolist():  # Python floats: cheaper per field
            symbol = self.symbol(cursor, row)
            if symbol is not None:
                out.append(symbol)
                cursor.context = (cursor.context + [c.key(symbol)])[-c.order:]
            cursor.last_pitch = min(max(int(round(row[PITCH])), 0), 127)
            cursor.tempo.push(row[STEP])
        return out

    def observe(self, rows: np.ndarray) -> None:
        """Learn the player's notes (N, 4) in onset order."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        with self._lock:
            for symbol in self.advance(self.cursor, rows):
                self._append(symbol)
            self.notes_seen += len(rows)

    def _append(self, symbol: int) -> None:
        history = self._history
        history.append(symbol)
        self._keys.append(self.config.key(symbol))
        self._count(len(history) - 1, +1)
        while len(history) > self.config.capacity:
            self._count(0, -1, forget=True)
            history.popleft()
            self._keys.popleft()

    def _count(self, j: int, delta: int, forget: bool = False) -> None:
        """Add (or remove) the n-grams ending at position j; ``forget``: those *starting* at j = 0.

        The gram of order k is the one of order k - 1 and one more symbol (before it, or after
        it when forgetting), so only that symbol is checked for a BREAK."""
        history, keys, tables = self._history, self._keys, self._tables
        nxt = history[0 if forget else j]
        if nxt == BREAK:
            return
        unigram = self._unigram
        before = float(unigram[nxt])
        unigram[nxt] = before + delta
        self._unigram_total += delta
        self._unigram_distinct += (before + delta > 0) - (before > 0)
        context: tuple[int, ...] = ()
        for k in range(1, self.config.order + 1):
            if forget:  # the grams history[0 .. k]: the context grows at its end
                if k >= len(history) or history[k] == BREAK:
                    break
                nxt, context = history[k], context + (keys[k - 1],)
            else:  # the grams history[j - k .. j]: the context grows at its start
                if j - k < 0 or history[j - k] == BREAK:
                    break
                context = (keys[j - k],) + context
            table = tables[k]
            entry = table.get(context)
            if entry is None:
                entry = table[context] = [0, {}]
            entry[0] += delta
            followers = entry[1]
            count = followers[nxt] = followers.get(nxt, 0) + delta
            if count <= 0:
                del followers[nxt]
            if entry[0] <= 0:
                del table[context]

    # -- predicting -----------------------------------------------------------------------------

    def predict(self, cursor: Cursor | None = None) -> Prediction:
        """The next symbol's distribution after ``cursor`` (the learning cursor if None).

        Interpolated PPM: start from the uniform floor, blend in the unigram with weight
        total / (total + distinct), then each longer matching context in turn, scaling what is
        there by (1 - keep) and adding keep · count / n for each follower.  Computed as one dense
        product (the floor and unigram times every later (1 - keep)) plus each context's
        followers times the (1 - keep) of the contexts after it: the same sum, O(followers).
        """
        c = self.config
        with self._lock:
            cursor = cursor or self.cursor
            context, tables, matched = tuple(cursor.context), self._tables, []
            for k in range(1, min(c.order, len(context)) + 1):
                entry = tables[k].get(context[-k:])
                if entry is None:
                    break
                matched.append(entry)
            order, confidence = len(matched), 0.0
            later, scales = 1.0, []  # later: the product of (1 - keep) of the longer contexts
            for n, followers in reversed(matched):
                keep = n / (n + len(followers))
                if not scales:
                    confidence = keep * order / c.order
                scales.append(later * keep / n)
                later *= 1.0 - keep
            total = self._unigram_total
            if total > 0:
                unigram_keep = total / (total + self._unigram_distinct)
                probs = self._unigram * (later * unigram_keep / total)
                probs += later * (1.0 - unigram_keep) / c.symbols
            else:
                probs = np.full(c.symbols, later / c.symbols)
            for (n, followers), scale in zip(reversed(matched), scales):
                if len(followers) > DENSE_FOLLOWERS:
                    size = len(followers)
                    probs[np.fromiter(followers, np.intp, size)] += scale * np.fromiter(followers.values(), np.float64, size)
                else:
                    for symbol, count in followers.items():
                        probs[symbol] += scale * count
        return Prediction(probs.reshape(c.intervals, c.rhythms), confidence, order, cursor.last_pitch, cursor.tempo.unit)

    def step_seconds(self, prediction: Prediction) -> np.ndarray:
        """Seconds of each rhythm class at the prediction's tempo (0 for the chord class)."""
        return self._ratios * prediction.unit

    # -- the file -------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        with self._lock:
            return {"format": FORMAT, "version": FORMAT_VERSION, "config": asdict(self.config),
                    "history": list(self._history), "notes_seen": self.notes_seen}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the memory atomically: a temporary file in the same folder, then a rename."""
        path = Path(path).expanduser()
        data = gzip.compress(json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8"), mtime=0)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise MemoryFileError(f"{path}: cannot write the memory file ({exc.strerror or exc})") from exc
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SessionMemory":
        """A memory saved by ``save``; its session ends where the file ends (a BREAK follows)."""
        path = Path(path).expanduser()
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise MemoryFileError(f"{path}: cannot read the memory file ({exc.strerror or exc})") from exc
        try:
            data = json.loads(gzip.decompress(raw).decode("utf-8"))
        except (OSError, EOFError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            what = "truncated" if isinstance(exc, EOFError) else "not a livegen memory file"
            raise MemoryFileError(f"{path}: {what} (cannot decode it: {type(exc).__name__})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise MemoryFileError(f"{path}: not a livegen memory file (no \"format\": \"{FORMAT}\")")
        if data.get("version") != FORMAT_VERSION:
            raise MemoryFileError(f"{path}: memory file version {data.get('version')!r}, this livegen reads {FORMAT_VERSION}")
        try:
            known = {f.name for f in fields(MemoryConfig)}
            config = data["config"]
            if not isinstance(config, dict) or set(config) - known:
                raise ValueError(f"unknown config keys {sorted(set(config) - known) if isinstance(config, dict) else config!r}")
            memory = cls(MemoryConfig(**config))
            history = data["history"]
            if not isinstance(history, list) or not all(
                    type(s) is int and (s == BREAK or 0 <= s < memory.config.symbols) for s in history):
                raise ValueError("history must be a list of symbols")
            notes_seen = data.get("notes_seen", 0)
            if type(notes_seen) is not int or notes_seen < 0:
                raise ValueError(f"notes_seen = {notes_seen!r}")
        except (KeyError, TypeError, ValueError) as exc:
            raise MemoryFileError(f"{path}: corrupt memory file ({exc})") from exc
        with memory._lock:
            for symbol in history[-memory.config.capacity:] + ([BREAK] if history and history[-1] != BREAK else []):
                memory._append(symbol)
            memory.notes_seen = notes_seen
        return memory
