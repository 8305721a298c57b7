"""Raw MIDI byte lists in, note-level events out: the first step on the engine thread.

The input's poll thread only timestamps and queues each message; the engine thread calls
``NoteAssembler.feed`` with it.  A keyboard (or a cable, or a driver) can send anything, so
``feed`` never raises.  rtmidi normally delivers whole messages, but what it hands over is read
as a MIDI byte stream (``midi_bytes.StreamParser``): a message split over two deliveries, or
several in one with running status, still counts, so a mangled note-off cannot leave a key down.
Active sensing, aftertouch, pitch bend, sysex, undefined status bytes, data bytes without a
status and truncated messages are dropped.

Events:

- ``NoteStarted`` on every key down, so the phrase logic can react to onsets (barge-in);
- ``NoteCompleted`` once a note stops sounding: at key up, or, if the sustain pedal was down
  at key up, at pedal up, with the note's end extended to that instant (what the listener hears);
- ``PedalChanged`` when a channel's sustain pedal crosses the threshold, ``ControlChanged``
  for every control change (sustain included), ``ProgramChanged``;
- ``ClockTick``/``ClockStart``/``ClockStop``/``ClockContinue`` pass system real-time through for
  a later tempo sync.

Per key, a new note-on while the previous note on the same channel and pitch still sounds
(held or sustained) completes the old note first, so every ``NoteStarted`` is followed by
exactly one ``NoteCompleted`` (``flush`` provides it at shutdown).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

from livegen import midi_bytes as mb
from livegen.notes import Note

Key = tuple[int, int]
"""(channel, pitch)."""


@dataclass(frozen=True, slots=True)
class NoteStarted:
    pitch: int
    velocity: int
    channel: int
    t: float


@dataclass(frozen=True, slots=True)
class NoteCompleted:
    note: Note
    channel: int

    @property
    def t(self) -> float:
        """When the note stopped sounding (its end)."""
        return self.note.end


@dataclass(frozen=True, slots=True)
class PedalChanged:
    down: bool
    channel: int
    t: float


@dataclass(frozen=True, slots=True)
class ControlChanged:
    channel: int
    control: int
    value: int
    t: float


@dataclass(frozen=True, slots=True)
class ProgramChanged:
    channel: int
    program: int
    t: float


@dataclass(frozen=True, slots=True)
class ClockTick:
    t: float


@dataclass(frozen=True, slots=True)
class ClockStart:
    t: float


@dataclass(frozen=True, slots=True)
class ClockStop:
    t: float


@dataclass(frozen=True, slots=True)
class ClockContinue:
    t: float


Event = Union[
    NoteStarted,
    NoteCompleted,
    PedalChanged,
    ControlChanged,
    ProgramChanged,
    ClockTick,
    ClockStart,
    ClockStop,
    ClockContinue,
]

_REALTIME_EVENTS = {
    mb.TIMING_CLOCK: ClockTick,
    mb.START: ClockStart,
    mb.CONTINUE: ClockContinue,
    mb.STOP: ClockStop,
}


@dataclass(slots=True)
class _Sounding:
    start: float
    velocity: int


class NoteAssembler:
    """Pairs note-ons with note-offs, applies the sustain pedal and turns bytes into events.

    ``channel_filter``: channels (0-15) to listen to; None listens to all.  System real-time
    messages are not channel messages and always pass.
    """

    def __init__(self, channel_filter: Iterable[int] | None = None) -> None:
        self.channel_filter: frozenset[int] | None = (
            None if channel_filter is None else frozenset(mb.check_channel(c) for c in channel_filter)
        )
        self._held: dict[Key, _Sounding] = {}  # key physically down
        self._sustained: dict[Key, _Sounding] = {}  # key up, still sounding through the pedal
        self._pedal: set[int] = set()  # channels whose sustain pedal is down
        self._parser = mb.StreamParser()

    @property
    def keys_down(self) -> frozenset[Key]:
        """(channel, pitch) of every key physically held."""
        return frozenset(self._held)

    @property
    def pedal_down(self) -> bool:
        """Whether the sustain pedal is down on any channel."""
        return bool(self._pedal)

    @property
    def sounding(self) -> frozenset[Key]:
        """(channel, pitch) of every note started and not yet completed (held or sustained)."""
        return frozenset(self._held) | frozenset(self._sustained)

    def feed(self, message: Sequence[int], t: float) -> list[Event]:
        """Parse the MIDI bytes received at ``t``; returns the events they cause, maybe none.

        ``message`` is normally one whole message; whatever it holds, the bytes continue those
        fed before (see the module docstring) and all its events get the time ``t``.
        """
        events: list[Event] = []
        for parsed in self._parser.feed(message):
            events += self._message(parsed, t)
        return events

    def _message(self, message: list[int], t: float) -> list[Event]:
        """One whole, well-formed message (from the parser) -> events."""
        status = message[0]
        if status >= mb.SYSEX_START:
            realtime = _REALTIME_EVENTS.get(status)
            return [realtime(t)] if realtime is not None else []
        kind, channel = status & mb.STATUS_MASK, status & mb.CHANNEL_MASK
        if self.channel_filter is not None and channel not in self.channel_filter:
            return []
        data = message[1:]
        if kind == mb.NOTE_ON and data[1] > 0:
            return self._key_down(channel, data[0], data[1], t)
        if kind in (mb.NOTE_ON, mb.NOTE_OFF):  # note-on with velocity 0 is a note-off
            return self._key_up(channel, data[0], t)
        if kind == mb.CONTROL_CHANGE:
            return self._control(channel, data[0], data[1], t)
        if kind == mb.PROGRAM_CHANGE:
            return [ProgramChanged(channel, data[0], t)]
        return []  # aftertouch, pitch bend

    def flush(self, t: float) -> list[Event]:
        """Complete every sounding note and lift every pedal at ``t`` (shutdown, lost port)."""
        self._parser.reset()
        events: list[Event] = []
        for channel in sorted({key[0] for key in self.sounding}):
            events += self._complete_channel(channel, t)
        for channel in sorted(self._pedal):
            events.append(PedalChanged(False, channel, t))
        self._pedal.clear()
        return events

    def _key_down(self, channel: int, pitch: int, velocity: int, t: float) -> list[Event]:
        key = (channel, pitch)
        events: list[Event] = []
        old = self._held.pop(key, None) or self._sustained.pop(key, None)
        if old is not None:  # re-strike: the old note ends where the new one begins
            events.append(self._completed(key, old, t))
        self._held[key] = _Sounding(t, velocity)
        events.append(NoteStarted(pitch, velocity, channel, t))
        return events

    def _key_up(self, channel: int, pitch: int, t: float) -> list[Event]:
        key = (channel, pitch)
        sounding = self._held.pop(key, None)
        if sounding is None:
            return []  # a note-off for a key we never saw down
        if channel in self._pedal:
            self._sustained[key] = sounding
            return []
        return [self._completed(key, sounding, t)]

    def _control(self, channel: int, control: int, value: int, t: float) -> list[Event]:
        events: list[Event] = [ControlChanged(channel, control, value, t)]
        if control == mb.CC_SUSTAIN:
            down = value >= mb.PEDAL_DOWN_THRESHOLD
            if down != (channel in self._pedal):
                events += self._set_pedal(channel, down, t)
        elif control == mb.CC_RESET_ALL_CONTROLLERS and channel in self._pedal:
            events += self._set_pedal(channel, False, t)
        elif control in (mb.CC_ALL_NOTES_OFF, mb.CC_ALL_SOUND_OFF):
            # The sender declares the channel silent: trust it, so a lost note-off cannot
            # hold a phrase open forever.
            events += self._complete_channel(channel, t)
        return events

    def _set_pedal(self, channel: int, down: bool, t: float) -> list[Event]:
        events: list[Event] = [PedalChanged(down, channel, t)]
        if down:
            self._pedal.add(channel)
            return events
        self._pedal.discard(channel)
        released = sorted(
            (key for key in self._sustained if key[0] == channel),
            key=lambda key: (self._sustained[key].start, key[1]),
        )
        for key in released:
            events.append(self._completed(key, self._sustained.pop(key), t))
        return events

    def _complete_channel(self, channel: int, t: float) -> list[Event]:
        items = [(key, s) for table in (self._held, self._sustained) for key, s in table.items() if key[0] == channel]
        items.sort(key=lambda item: (item[1].start, item[0][1]))
        for key, _ in items:
            self._held.pop(key, None)
            self._sustained.pop(key, None)
        return [self._completed(key, s, t) for key, s in items]

    @staticmethod
    def _completed(key: Key, sounding: _Sounding, t: float) -> NoteCompleted:
        channel, pitch = key
        return NoteCompleted(Note(pitch, sounding.start, max(t, sounding.start), sounding.velocity), channel)
