"""The rolling context of played notes, and the order in which the model gets to see them.

Notes *complete* in release order, but the model reads notes in *onset* order (each row's step
is the time since the previous onset).  A held bass note started before a run of short notes
completes after them, so feeding notes as they complete would give the model a wrong order.

The feeding rule: ``pending_for_model()`` hands out each completed note exactly once, in onset
order, and only once every note with an earlier onset has completed too.  A note still held
blocks the completed notes that started after it; they are handed out together when it ends.
So the worker can call ``pending_for_model()`` after every event and step the streaming model
on what it returns: at a phrase end nothing is held, and only the last few notes remain.

One exception bounds that wait: if more than ``max_pending`` completed notes queue behind a
held note (a pedal point under a long melody), the held note is fed early with its duration so
far (up to the latest event seen), so the model does not fall behind.  When it completes later
it joins ``notes()`` with its true duration but is not fed again.

Ordering key everywhere: (onset, pitch), lowest pitch first within a chord, as in
``livegen.notes.sort_notes``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from livegen.engine.assembler import Event, Key, NoteCompleted, NoteStarted
from livegen.notes import Note, notes_to_array


class Row(NamedTuple):
    """One note as the model sees it; ``step`` is the time since the previous fed onset."""

    pitch: int
    step: float
    duration: float
    velocity: int


@dataclass(slots=True)
class _Open:
    pitch: int
    onset: float
    velocity: int
    fed_early: bool = False


def _order(note: Note) -> tuple[float, int, float]:
    return (note.start, note.pitch, note.end)


class Window:
    """The last ``size`` completed notes, plus the cursor that feeds the model in onset order."""

    def __init__(self, size: int, max_pending: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        if max_pending is not None and max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.size = size
        self.max_pending = size if max_pending is None else max_pending
        self._open: dict[Key, _Open] = {}
        self._completed: list[Note] = []  # onset order, at most `size`
        self._pending: list[Note] = []  # completed, not yet fed; onset order
        self._previous_onset: float | None = None
        self._now = float("-inf")

    def __len__(self) -> int:
        return len(self._completed)

    def on_event(self, event: Event) -> None:
        """Take the note events of ``NoteAssembler.feed``; every other event is ignored."""
        if isinstance(event, NoteStarted):
            self.note_started(event.pitch, event.velocity, event.channel, event.t)
        elif isinstance(event, NoteCompleted):
            self.note_completed(event.note, event.channel)

    def note_started(self, pitch: int, velocity: int, channel: int, t: float) -> None:
        self._now = max(self._now, t)
        self._open[(channel, pitch)] = _Open(pitch, t, velocity)

    def note_completed(self, note: Note, channel: int = 0) -> None:
        """Add a finished note; without a matching ``note_started`` it is simply queued."""
        self._now = max(self._now, note.end)
        opened = self._open.pop((channel, note.pitch), None)
        bisect.insort(self._completed, note, key=_order)
        if len(self._completed) > self.size:
            del self._completed[0]
        if opened is None or not opened.fed_early:
            bisect.insort(self._pending, note, key=_order)

    def notes(self) -> list[Note]:
        """The last ``size`` completed notes in onset order."""
        return list(self._completed)

    def rows(self) -> np.ndarray:
        """``notes()`` as an (N, 4) array: pitch, step, duration, velocity (first step 0)."""
        return notes_to_array(self._completed)

    @property
    def held(self) -> int:
        """Notes started and not completed (keys or pedal), fed early ones included."""
        return len(self._open)

    @property
    def waiting(self) -> int:
        """Completed notes not yet handed to the model (blocked or not yet asked for)."""
        return len(self._pending)

    def pending_for_model(self) -> list[Row]:
        """Consume and return the notes the model may read now, in onset order (see module doc)."""
        rows: list[Row] = []
        while True:
            blocker = min(
                (o for o in self._open.values() if not o.fed_early),
                key=lambda o: (o.onset, o.pitch),
                default=None,
            )
            limit = None if blocker is None else (blocker.onset, blocker.pitch)
            feed = 0
            while feed < len(self._pending) and (
                limit is None or (self._pending[feed].start, self._pending[feed].pitch) < limit
            ):
                feed += 1
            rows += [self._row(note.pitch, note.start, note.duration, note.velocity) for note in self._pending[:feed]]
            del self._pending[:feed]
            if blocker is None or len(self._pending) <= self.max_pending:
                return rows
            blocker.fed_early = True  # too much is waiting behind it: feed it with its length so far
            rows.append(self._row(blocker.pitch, blocker.onset, max(self._now - blocker.onset, 0.0), blocker.velocity))

    def set_previous_onset(self, t: float | None) -> None:
        """Measure the next fed note's step from ``t`` (e.g. after feeding the AI's own notes
        into the same model state); None makes the next step 0."""
        self._previous_onset = t

    def clear(self) -> None:
        """Forget completed and waiting notes and the step origin; notes still held are kept,
        because they belong to whatever is played next."""
        self._completed.clear()
        self._pending.clear()
        self._previous_onset = None

    def _row(self, pitch: int, onset: float, duration: float, velocity: int) -> Row:
        previous = self._previous_onset
        step = 0.0 if previous is None else max(onset - previous, 0.0)
        self._previous_onset = onset if previous is None else max(previous, onset)
        return Row(pitch, step, duration, velocity)

