"""When has the player finished a phrase?  The answer is the moment the AI starts to respond.

Three triggers, whichever comes first:

- ``gap``: ``gap_s`` of silence after the last note-off (or pedal-up, whichever is later) with no
  key and no sustain pedal held.  While anything is held, nothing triggers, however long.
- ``max_listen``: ``max_listen_s`` after the phrase's first onset, held keys or not, so a player
  who never stops still gets an answer.
- ``end_call``: the ``end_call_cc`` controller (a footswitch) going from < 64 to >= 64 triggers at
  once, whatever is held, with however many notes (the daemon decides what to do with few).

``gap`` and ``max_listen`` need at least ``min_notes`` onsets in the phrase.  Clock ticks, active
sensing and other controllers change nothing.  With ``adaptive=True`` the gap follows the
player: ``clamp(adaptive_k * median inter-onset interval, adaptive_min_s, adaptive_max_s)`` once
the phrase has ``ADAPTIVE_MIN_INTERVALS`` intervals (chord notes closer than
``CHORD_TOLERANCE_S`` count as one onset), ``gap_s`` before that.

Usage on the engine thread: pass every event to ``on_event``; wait until ``next_deadline()``
(or the next message); call ``poll(now)``.  A returned ``PhraseEnd`` also starts a new phrase
(``reset``), so the same phrase never triggers twice.  The detector tracks held keys and pedals
itself from the events, so it needs no reference to the assembler.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Literal

from livegen import midi_bytes as mb
from livegen.engine.assembler import ControlChanged, Event, Key, NoteCompleted, NoteStarted, PedalChanged

Reason = Literal["gap", "max_listen", "end_call"]

CHORD_TOLERANCE_S = 0.035
"""Onsets closer than this are one chord, not a rhythm, for the adaptive gap."""

ADAPTIVE_MIN_INTERVALS = 3
"""Inter-onset intervals needed before the adaptive gap replaces ``gap_s``."""


@dataclass(frozen=True, slots=True)
class PhraseEnd:
    """A detected phrase end: ``t`` is the trigger instant (not the time it was polled)."""

    t: float
    reason: Reason
    notes: int


class PhraseDetector:
    """Decides when a phrase ends from note, pedal and controller events (see module doc)."""

    def __init__(
        self,
        gap_s: float,
        min_notes: int = 1,
        max_listen_s: float | None = None,
        end_call_cc: int | None = None,
        adaptive: bool = False,
        adaptive_k: float = 2.5,
        adaptive_min_s: float | None = None,
        adaptive_max_s: float | None = None,
    ) -> None:
        if not gap_s > 0:
            raise ValueError(f"gap_s must be positive, got {gap_s}")
        if min_notes < 1:
            raise ValueError(f"min_notes must be at least 1, got {min_notes}")
        if max_listen_s is not None and not max_listen_s > 0:
            raise ValueError(f"max_listen_s must be positive, got {max_listen_s}")
        if end_call_cc is not None:
            end_call_cc = mb.check_data("end_call_cc", end_call_cc)
            if end_call_cc == mb.CC_SUSTAIN:
                raise ValueError("end_call_cc cannot be the sustain pedal (64): it holds phrases open")
        if not adaptive_k > 0:
            raise ValueError(f"adaptive_k must be positive, got {adaptive_k}")
        self.gap_s = float(gap_s)
        self.min_notes = min_notes
        self.max_listen_s = max_listen_s
        self.end_call_cc = end_call_cc
        self.adaptive = adaptive
        self.adaptive_k = adaptive_k
        self.adaptive_min_s = gap_s / 2 if adaptive_min_s is None else adaptive_min_s
        self.adaptive_max_s = gap_s * 2 if adaptive_max_s is None else adaptive_max_s
        if not 0 < self.adaptive_min_s <= self.adaptive_max_s:
            raise ValueError(
                f"need 0 < adaptive_min_s <= adaptive_max_s, got {self.adaptive_min_s}, {self.adaptive_max_s}"
            )
        # Physical state: survives reset(), since a key held across a trigger is still held.
        self._open: set[Key] = set()
        self._pedal: set[int] = set()
        self._switch_high: set[int] = set()  # channels whose end-call controller is >= 64
        # Phrase state.
        self._onsets: list[float] = []
        self._last_release: float | None = None
        self._end_call_at: float | None = None
        self.last_onsets: list[float] = []
        """Onsets of the phrase that ended last (its tempo, once the detector has reset)."""

    @property
    def onsets(self) -> list[float]:
        """Onset times of the current phrase (a copy)."""
        return list(self._onsets)

    @property
    def notes(self) -> int:
        """Onsets in the current phrase."""
        return len(self._onsets)

    @property
    def held(self) -> bool:
        """Whether a key or a sustain pedal is down (no gap can run)."""
        return bool(self._open or self._pedal)

    @property
    def gap(self) -> float:
        """The silence that would end the phrase now (fixed or adaptive)."""
        if not self.adaptive:
            return self.gap_s
        intervals = [b - a for a, b in zip(self._onsets, self._onsets[1:]) if b - a >= CHORD_TOLERANCE_S]
        if len(intervals) < ADAPTIVE_MIN_INTERVALS:
            return self.gap_s
        gap = self.adaptive_k * statistics.median(intervals)
        return min(max(gap, self.adaptive_min_s), self.adaptive_max_s)

    def on_event(self, event: Event) -> None:
        if isinstance(event, NoteStarted):
            self._open.add((event.channel, event.pitch))
            self._onsets.append(event.t)
        elif isinstance(event, NoteCompleted):
            self._open.discard((event.channel, event.note.pitch))
            self._released(event.t)
        elif isinstance(event, PedalChanged):
            if event.down:
                self._pedal.add(event.channel)
            else:
                self._pedal.discard(event.channel)
                self._released(event.t)
        elif isinstance(event, ControlChanged) and event.control == self.end_call_cc:
            high = event.value >= mb.PEDAL_DOWN_THRESHOLD
            if high and event.channel not in self._switch_high and self._end_call_at is None:
                self._end_call_at = event.t
            if high:
                self._switch_high.add(event.channel)
            else:
                self._switch_high.discard(event.channel)

    def end_call(self, t: float) -> None:
        """End the phrase at ``t``, as the end-call controller would (OSC, the live view)."""
        if self._end_call_at is None:
            self._end_call_at = t

    def next_deadline(self) -> float | None:
        """The earliest instant a trigger could fire if no further event arrives, or None."""
        candidates = [t for t, _ in self._candidates()]
        return min(candidates) if candidates else None

    def poll(self, now: float) -> PhraseEnd | None:
        """The phrase end due at or before ``now``, if any; returning one starts a new phrase."""
        due = [(t, reason) for t, reason in self._candidates() if t <= now]
        if not due:
            return None
        t, reason = min(due)
        end = PhraseEnd(t, reason, len(self._onsets))
        self.reset()
        return end

    def reset(self) -> None:
        """Start a new phrase; keys and pedals still held stay known as held."""
        if self._onsets:
            self.last_onsets = list(self._onsets)
        self._onsets.clear()
        self._last_release = None
        self._end_call_at = None

    def _released(self, t: float) -> None:
        self._last_release = t if self._last_release is None else max(self._last_release, t)

    def _candidates(self) -> list[tuple[float, Reason]]:
        candidates: list[tuple[float, Reason]] = []
        if self._end_call_at is not None:
            candidates.append((self._end_call_at, "end_call"))
        if len(self._onsets) < self.min_notes:
            return candidates
        enough_at = self._onsets[self.min_notes - 1]  # when the phrase became long enough
        if self.max_listen_s is not None:
            candidates.append((max(self._onsets[0] + self.max_listen_s, enough_at), "max_listen"))
        if not self.held and self._last_release is not None:
            candidates.append((max(self._last_release + self.gap, enough_at), "gap"))
        return candidates
