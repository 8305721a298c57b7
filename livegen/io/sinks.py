"""One output interface for everything that makes or keeps sound: ports, synth, recorder, tests.

Following mido's ports, the public methods validate their arguments (TypeError/ValueError naming
the field), take the sink's lock and track which notes sound; a concrete sink overrides only
private hooks.  Two ways to write one:

- a byte-level output (a MIDI port) overrides ``_send(message)`` and ``_close()``; the default
  hooks build the bytes with ``livegen.midi_bytes``::

      class MidiPortSink(Sink):
          def __init__(self, port):
              super().__init__()
              self._port = port
          def _send(self, message):
              self._port.send_message(message)
          def _close(self):
              self._port.close_port()

- an API-level output (FluidSynth) overrides ``_note_on``, ``_note_off``, ``_control``,
  ``_program`` and ``_close``.

Because the base tracks sounding notes per channel, ``all_notes_off()`` sends a note-off for
each of them and then CC 123 on every channel used, and ``close()`` always does that first, so
no subclass can forget to silence on exit.  ``close()`` is idempotent; sending to a closed sink
raises ValueError, as a closed mido port does.

A hook that raises never leaves a note hanging unnoticed: a failed note-on still counts as
sounding (it may have gone out), a failed note-off makes the sink silence that channel at once
(note-offs again, then CC 123: after a lost message the receiver's state is unknown, and CC 123
is MIDI's way back to a known one), and a note is forgotten only once its note-off or its
channel's CC 123 went out, so ``close()`` retries whatever is still owed.  The error is raised
afterwards all the same, for the caller to report.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Sequence

from livegen import midi_bytes as mb
from livegen.clock import Clock
from livegen.notes import Note, Track

HUMAN_TRACK = "human"
AI_TRACK = "livegen"


class Sink:
    """Base output: validation, locking and sounding-note tracking; subclasses fill the hooks."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._sounding: dict[int, set[int]] = {}  # channel -> pitches on
        self._channels_used: set[int] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def sounding(self) -> frozenset[tuple[int, int]]:
        """(channel, pitch) of every note on through this sink."""
        with self._lock:
            return frozenset((c, p) for c, pitches in self._sounding.items() for p in pitches)

    @property
    def channels_used(self) -> frozenset[int]:
        with self._lock:
            return frozenset(self._channels_used)

    def note_on(self, channel: int, pitch: int, velocity: int) -> None:
        """Start a note; velocity 0 means note-off, as on the wire."""
        channel, pitch = mb.check_channel(channel), mb.check_data("pitch", pitch)
        velocity = mb.check_data("velocity", velocity)
        if velocity == 0:
            self.note_off(channel, pitch)
            return
        with self._lock:
            self._check_open()
            try:
                self._note_on(channel, pitch, velocity)
            finally:  # even if the hook failed the note may sound: make sure close ends it
                self._sounding.setdefault(channel, set()).add(pitch)
                self._channels_used.add(channel)

    def note_off(self, channel: int, pitch: int) -> None:
        channel, pitch = mb.check_channel(channel), mb.check_data("pitch", pitch)
        with self._lock:
            self._check_open()
            self._channels_used.add(channel)
            try:
                self._note_off(channel, pitch)
            except Exception as exc:
                self._after_failed_note_off(channel, pitch, exc)
                raise
            self._sounding.get(channel, set()).discard(pitch)

    def control(self, channel: int, control: int, value: int) -> None:
        channel = mb.check_channel(channel)
        control, value = mb.check_data("control", control), mb.check_data("value", value)
        with self._lock:
            self._check_open()
            self._control(channel, control, value)
            self._channels_used.add(channel)

    def program(self, channel: int, program: int) -> None:
        channel, program = mb.check_channel(channel), mb.check_data("program", program)
        with self._lock:
            self._check_open()
            self._program(channel, program)
            self._channels_used.add(channel)

    def all_notes_off(self, channels: Iterable[int] | None = None) -> None:
        """Note-off for every sounding note, then CC 123, on ``channels`` (default: all used).

        Every hook call is attempted even if some raise; the first error is re-raised after.
        """
        with self._lock:
            self._check_open()
            self._silence(channels)

    def close(self) -> None:
        """Silence everything this sink started, then release it.  Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._silence(None)
            finally:
                self._close()

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _silence(self, channels: Iterable[int] | None) -> None:
        """Note-offs, then CC 123, per channel; a pitch stays owed only if both failed for it."""
        wanted = sorted(self._channels_used if channels is None else {mb.check_channel(c) for c in channels})
        errors: list[BaseException] = []
        for channel in wanted:
            owed = set()
            for pitch in sorted(self._sounding.get(channel, ())):
                try:
                    self._note_off(channel, pitch)
                except Exception as exc:
                    errors.append(exc)
                    owed.add(pitch)
            try:
                self._control(channel, mb.CC_ALL_NOTES_OFF, 0)
                owed.clear()
            except Exception as exc:
                errors.append(exc)
            if owed:
                self._sounding[channel] = owed
            else:
                self._sounding.pop(channel, None)
        _raise_first(errors)

    def _after_failed_note_off(self, channel: int, pitch: int, error: BaseException) -> None:
        """A note-off did not go out: silence the channel now rather than leave the note on.

        What fails again stays owed (see ``_silence``) and is noted on ``error``.
        """
        try:
            self._silence([channel])
        except Exception as again:
            error.add_note(f"silencing channel {channel + 1} failed too: {again!r}")

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{type(self).__name__} is closed")

    # -- hooks ----------------------------------------------------------------------------------
    # Arguments are validated ints and the sink's lock is held.  By default each builds the
    # MIDI bytes and calls _send, so a port needs only _send.

    def _note_on(self, channel: int, pitch: int, velocity: int) -> None:
        self._send(mb.note_on(channel, pitch, velocity))

    def _note_off(self, channel: int, pitch: int) -> None:
        self._send(mb.note_off(channel, pitch))

    def _control(self, channel: int, control: int, value: int) -> None:
        self._send(mb.control_change(channel, control, value))

    def _program(self, channel: int, program: int) -> None:
        self._send(mb.program_change(channel, program))

    def _send(self, message: list[int]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must override _send or the _note_on/... hooks")

    def _close(self) -> None:
        """Release the device; the base has already silenced it."""


def _raise_first(errors: Sequence[BaseException]) -> None:
    """Raise the first error, the others attached as notes, so its type stays catchable."""
    if not errors:
        return
    first = errors[0]
    for other in errors[1:]:
        first.add_note(f"also failed: {other!r}")
    raise first


class NullSink(Sink):
    """Discards everything (a daemon run with no output, benchmarks)."""

    def _send(self, message: list[int]) -> None:
        pass


class MemorySink(Sink):
    """Records every hook call as a plain tuple, so a test asserts the whole output at once.

    ``events`` holds ``("note_on", channel, pitch, velocity, t)``, ``("note_off", channel,
    pitch, t)``, ``("control", channel, control, value, t)``, ``("program", channel, program, t)``
    and ``("close", t)``, with ``t`` read from ``clock``; ``messages`` holds the same as MIDI bytes.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self.events: list[tuple] = []
        self.messages: list[list[int]] = []

    def _note_on(self, channel: int, pitch: int, velocity: int) -> None:
        self.events.append(("note_on", channel, pitch, velocity, self._clock()))
        self.messages.append(mb.note_on(channel, pitch, velocity))

    def _note_off(self, channel: int, pitch: int) -> None:
        self.events.append(("note_off", channel, pitch, self._clock()))
        self.messages.append(mb.note_off(channel, pitch))

    def _control(self, channel: int, control: int, value: int) -> None:
        self.events.append(("control", channel, control, value, self._clock()))
        self.messages.append(mb.control_change(channel, control, value))

    def _program(self, channel: int, program: int) -> None:
        self.events.append(("program", channel, program, self._clock()))
        self.messages.append(mb.program_change(channel, program))

    def _close(self) -> None:
        self.events.append(("close", self._clock()))

    def without_times(self) -> list[tuple]:
        """``events`` with the trailing time dropped, for order-only assertions."""
        return [event[:-1] for event in self.events]


class MultiSink(Sink):
    """Fans every call out to several sinks; one failing sink does not stop the others.

    Each child gets every call.  Errors are collected: with ``on_error`` each goes there and
    the call succeeds; without it the first is raised (others attached as notes) after all
    children were called.  ``close()`` silences through the children, then closes each.
    """

    def __init__(self, sinks: Iterable[Sink], on_error: Callable[[BaseException], None] | None = None) -> None:
        super().__init__()
        self.sinks = list(sinks)
        self._on_error = on_error

    def _fan_out(self, call: Callable[[Sink], None]) -> None:
        errors: list[BaseException] = []
        for sink in self.sinks:
            try:
                call(sink)
            except Exception as exc:
                errors.append(exc)
        if self._on_error is not None:
            for exc in errors:
                self._on_error(exc)
        else:
            _raise_first(errors)

    def _note_on(self, channel: int, pitch: int, velocity: int) -> None:
        self._fan_out(lambda sink: sink.note_on(channel, pitch, velocity))

    def _note_off(self, channel: int, pitch: int) -> None:
        self._fan_out(lambda sink: sink.note_off(channel, pitch))

    def _control(self, channel: int, control: int, value: int) -> None:
        self._fan_out(lambda sink: sink.control(channel, control, value))

    def _program(self, channel: int, program: int) -> None:
        self._fan_out(lambda sink: sink.program(channel, program))

    def _close(self) -> None:
        self._fan_out(lambda sink: sink.close())

    def _after_failed_note_off(self, channel: int, pitch: int, error: BaseException) -> None:
        """Each child that failed has silenced that channel itself; the others are done."""
        self._sounding.get(channel, set()).discard(pitch)


class RecordingSink(Sink):
    """Keeps what was played as notes per track, for ``livegen.notes.write_midi`` on exit.

    The on/off stream sent to this sink (the scheduler's output) becomes the ``ai_track``;
    the human's notes, already complete with input timestamps, come in through
    ``add_note(note)`` (from the assembler's ``NoteCompleted``).  Times are kept on the
    clock's scale and shifted by ``origin`` (default: the clock at construction) in
    ``tracks()``, so the file starts with the session.  Closing ends notes still on at the
    close time.  ``program`` on the AI's channel sets the AI track's program.
    """

    def __init__(
        self,
        clock: Clock = time.monotonic,
        origin: float | None = None,
        human_track: str = HUMAN_TRACK,
        ai_track: str = AI_TRACK,
    ) -> None:
        super().__init__()
        self._clock = clock
        self.origin = clock() if origin is None else origin
        self.ai_track = ai_track
        self._tracks: dict[str, Track] = {human_track: Track(human_track), ai_track: Track(ai_track)}
        self.human_track = human_track
        self._open: dict[tuple[int, int], tuple[float, int]] = {}  # (channel, pitch) -> start, velocity

    def add_note(self, note: Note, track: str | None = None) -> None:
        """Record a finished note (by default on the human track)."""
        with self._lock:
            name = self.human_track if track is None else track
            self._tracks.setdefault(name, Track(name)).notes.append(note)

    def tracks(self) -> list[Track]:
        """Copies of the tracks with times relative to ``origin``; open notes are left out."""
        with self._lock:
            return [
                Track(
                    track.name,
                    [Note(n.pitch, n.start - self.origin, n.end - self.origin, n.velocity) for n in track.notes],
                    track.program,
                    track.is_drum,
                )
                for track in self._tracks.values()
            ]

    def _note_on(self, channel: int, pitch: int, velocity: int) -> None:
        now = self._clock()
        self._finish(channel, pitch, now)  # a re-strike ends the previous note
        self._open[(channel, pitch)] = (now, velocity)

    def _note_off(self, channel: int, pitch: int) -> None:
        self._finish(channel, pitch, self._clock())

    def _control(self, channel: int, control: int, value: int) -> None:
        pass

    def _program(self, channel: int, program: int) -> None:
        self._tracks[self.ai_track].program = program

    def _close(self) -> None:
        now = self._clock()
        for channel, pitch in list(self._open):
            self._finish(channel, pitch, now)

    def _finish(self, channel: int, pitch: int, now: float) -> None:
        opened = self._open.pop((channel, pitch), None)
        if opened is not None:
            start, velocity = opened
            self._tracks[self.ai_track].notes.append(Note(pitch, start, max(now, start), velocity))


class MessageSink(Sink):
    """Raw MIDI bytes to any ``send(message)`` callable: a MIDI output port, for one."""

    def __init__(self, send: Callable[[list[int]], None]) -> None:
        super().__init__()
        self._deliver = send

    def _send(self, message: list[int]) -> None:
        self._deliver(message)
