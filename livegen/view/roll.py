"""A scrolling piano roll for the terminal: notes as spans, drawn as rows of pitches.

Time runs left to right, ``now`` at the right edge; each row is one pitch, labelled; the
player's notes and livegen's have a colour each (both at once: a third).  Pure logic on the
view's side: the spans come from snapshots, the drawing is a rich Text.
"""

from __future__ import annotations

import math
from collections import deque

from rich.text import Text

COLOURS = {"player": "bold cyan", "livegen": "bold magenta", "both": "bold white"}
NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
LABEL = 4  # characters of the pitch label
CELL = "█"


def pitch_name(pitch: int) -> str:
    return f"{NAMES[pitch % 12]}{pitch // 12 - 1}"


class Roll:
    """Note spans of the last ``span_s`` seconds, per player and livegen."""

    def __init__(self, span_s: float = 8.0) -> None:
        self.span_s = span_s
        self._open: dict[tuple[str, int, int], float] = {}  # (who, channel, pitch) -> start
        self._spans: deque[tuple[str, int, float, float]] = deque(maxlen=4096)  # who, pitch, start, end
        self.last: dict[str, list[int]] = {"player": [], "livegen": []}  # pitches of the latest phrase / answer
        self._last_on: dict[str, float] = {}

    def add(self, t: float, who: str, on: bool, channel: int, pitch: int, velocity: int = 0) -> None:
        key = (who, channel, pitch)
        if on:
            if t - self._last_on.get(who, -1e9) > 1.0:  # a new phrase or answer after a pause
                self.last[who] = []
            self._last_on[who] = t
            self.last[who] = (self.last[who] + [pitch])[-16:]
            if key in self._open:  # the same key again: end the old span
                self._spans.append((who, pitch, self._open.pop(key), t))
            self._open[key] = t
        elif key in self._open:
            self._spans.append((who, pitch, self._open.pop(key), t))

    def spans(self, now: float) -> list[tuple[str, int, float, float]]:
        """Spans visible at ``now`` (open notes run up to now)."""
        since = now - self.span_s
        visible = [s for s in self._spans if s[3] >= since]
        visible += [(who, pitch, start, now) for (who, _, pitch), start in self._open.items()]
        return visible

    def render(self, now: float, width: int, height: int) -> Text:
        """``height`` rows of ``width`` characters: the pitches in view, highest on top."""
        spans = self.spans(now)
        height = max(1, height)
        pitches = [s[1] for s in spans] or [60, 72]
        low, high = min(pitches), max(pitches)
        if high - low + 1 < height:  # fill the height, the notes in view in the middle
            pad = min(height, 128) - (high - low + 1)
            low, high = max(0, low - pad // 2), min(127, high + pad - pad // 2)
        if high - low + 1 > height:  # too many to show: the rows holding the most notes
            counts = [sum(1 for s in spans if p <= s[1] < p + height) for p in range(low, high - height + 2)]
            low = low + counts.index(max(counts))
            high = low + height - 1
        columns = max(1, width - LABEL)
        step = self.span_s / columns
        grid: dict[int, list[str | None]] = {p: [None] * columns for p in range(low, high + 1)}
        for who, pitch, start, end in spans:
            if pitch not in grid:
                continue
            first = max(0, int((start - (now - self.span_s)) / step))
            last = min(columns - 1, math.ceil((end - (now - self.span_s)) / step) - 1)  # the cells it covers
            row = grid[pitch]
            for column in range(first, max(first, last) + 1):
                if column < columns:
                    row[column] = who if row[column] in (None, who) else "both"
        text = Text(no_wrap=True, overflow="crop")
        for pitch in range(high, low - 1, -1):
            name = pitch_name(pitch)
            text.append(f"{name:<{LABEL}}", style="bold" if pitch % 12 == 0 else "dim")
            row = grid[pitch]
            start = 0
            for end in range(1, columns + 1):  # one run per colour: few segments to draw
                if end == columns or row[end] != row[start]:
                    cell = row[start]
                    if cell is None:
                        text.append(("·" if pitch % 12 == 0 else " ") * (end - start), style="dim")
                    else:
                        text.append(CELL * (end - start), style=COLOURS[cell])
                    start = end
            if pitch != low:
                text.append("\n")
        return text
