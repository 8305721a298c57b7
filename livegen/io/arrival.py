"""Arrival times of input messages from the MIDI API's own timestamps.

rtmidi timestamps every message natively (JACK: ``jack_get_time()`` in the process callback;
ALSA: the sequencer event's time) and hands Python the delta since the previous message.
livegen's poll thread (livegen/io/midi_in.py) takes a message up to a poll interval after it
arrived, and later still when it waits for the GIL on a busy machine, and a clock follower or
phrase detector fed those late stamps sees a jittery, tilted tempo.  ``ArrivalClock`` adds up the
native deltas and anchors that running sum to ``time.monotonic()``: a poll can be late but never early, so
the smallest ``now - sum`` seen is the best anchor.  The anchor is renewed from the minimum of
each window, so a slow drift between the two clocks cannot build up, and a stamp is never later
than the moment it was taken, nor (after a burst of lost deltas) more than ``MAX_LAG_S`` early.
"""

from __future__ import annotations

import math

MAX_LAG_S = 0.1
"""A poll this much later than the native times say is taken as lost native time (RtMidi's
JACK input leaves out events it swallows into an unterminated sysex), not as a slow poll."""

WINDOW_S = 30.0
"""The anchor is the minimum over the last window of this length (clock drift stays below ~1 us)."""


class ArrivalClock:
    """Turns ``(delta since the previous message, time.monotonic() now)`` into an arrival time."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._sum = 0.0
        self._anchor = math.inf
        self._window_min = math.inf
        self._window_start: float | None = None

    def stamp(self, delta: float, now: float) -> float:
        """Arrival time of a message that rtmidi says came ``delta`` s after the previous one."""
        if not (delta >= 0.0 and math.isfinite(delta)):  # a broken timestamp: start again from now
            self._anchor = self._window_min = math.inf
            self._window_start = None
            delta = 0.0
        self._sum += delta
        candidate = now - self._sum
        if self._window_start is None:
            self._window_start = now
        if now - self._window_start >= self._window_s:  # renew the anchor from the last window
            self._anchor = min(self._window_min, candidate)
            self._window_min = candidate
            self._window_start = now
        if candidate > self._anchor + MAX_LAG_S:  # the deltas lost time: start again from now
            self._anchor = self._window_min = candidate
        self._window_min = min(self._window_min, candidate)
        self._anchor = min(self._anchor, candidate)
        return self._sum + self._anchor
