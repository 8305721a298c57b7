"""MIDI output: ``send([0x90, 60, 100])``, thread-safe, following its target across hot-plug.

rtmidi with JACK (python-rtmidi 1.5.8 / RtMidi 5.0.0, jackd 1.9.21): sends go into a ring
buffer that the next process cycle empties, so ``MidiOut.close_port()`` waits up to 1 s for a
cycle to drain it, which never comes once the server died (closing then takes 1 s, not forever);
and when jackd dies, sends still succeed (hotplug.JackServerWatch notices from the socket).
"""

from __future__ import annotations

import operator
import threading
import time
from typing import Any, Sequence

from livegen.io.apis import DEFAULT_CLIENT_NAME, MidiBackendError, delete_client, rtmidi_module
from livegen.io.port import Port

DEFAULT_OUTPUT_NAME = "out"
RELEASE_AGAIN_S = 0.01
"""A reconnected output repeats its note-offs and CC 123 this much later (OutputPort.reconnect)."""
OUTPUT_DRAIN_S = 0.05
"""An output lingers this long after its last send before it closes, so queued messages leave."""


class OutputPort(Port):
    """MIDI output: ``send([0x90, 60, 100])``, thread-safe.

    ``OutputPort()`` opens the virtual port ``out`` under the client name; ``pattern`` connects
    to an existing port instead (see ``find_port``).  It remembers which notes and sustain
    pedals it left on, so that when its target disappears (``mark_lost``) and comes back
    (``reconnect``), it can close them there: nothing hangs on a replugged synth.
    """

    kind = "output"

    def __init__(
        self,
        api: str = "auto",
        client_name: str = DEFAULT_CLIENT_NAME,
        pattern: str | None = None,
        *,
        port_name: str = DEFAULT_OUTPUT_NAME,
    ) -> None:
        self._last_send = float("-inf")
        self._sounding: set[tuple[int, int]] = set()  # (channel, pitch) on, not yet off
        self._pedals: set[int] = set()  # channels whose sustain pedal we hold down
        self._channels = 0  # bit per channel a channel message went out on
        self._owed: set[tuple[int, int]] = set()  # sounding when the target was lost
        self._owed_pedals: set[int] = set()
        self._lost = False
        self._reopening = False
        self._idle = threading.Event()  # clear while reconnect() works on the rtmidi object
        self._idle.set()
        self._dropped = 0
        super().__init__(api, client_name, pattern, port_name)

    def send(self, message: Sequence[int]) -> None:
        """Send one MIDI message (status byte first; sysex as one F0 ... F7 message).

        TypeError/ValueError for a malformed message, ValueError once closed (as mido does),
        MidiBackendError if the backend fails.  While ``reconnect`` reopens the port, messages
        are dropped (and counted), never waited for: the scheduler must not stall.
        """
        data = check_message(message)
        with self._lock:
            if self._closed:
                raise ValueError(f"send() on closed MIDI output {self._name!r}")
            self._track(data)
            if self._reopening:
                self._dropped += 1
                return
            try:
                self._rt.send_message(data)
            except rtmidi_module().RtMidiError as exc:
                raise MidiBackendError(f"MIDI output {self._name!r}: {exc}") from exc
            self._last_send = time.monotonic()

    def _track(self, data: list[int]) -> None:
        kind, channel = data[0] & 0xF0, data[0] & 0x0F
        if kind >= 0xF0 or len(data) < 2:
            return
        self._channels |= 1 << channel
        if kind == 0x90 and len(data) == 3 and data[2] > 0:
            self._sounding.add((channel, data[1]))
        elif kind in (0x80, 0x90):
            self._sounding.discard((channel, data[1]))
        elif kind == 0xB0 and len(data) == 3:
            if data[1] == 64:
                (self._pedals.add if data[2] >= 64 else self._pedals.discard)(channel)
            elif data[1] in (120, 123):
                self._sounding -= {key for key in self._sounding if key[0] == channel}

    @property
    def lost(self) -> bool:
        """Whether the target is gone (``mark_lost``) and not reconnected since."""
        return self._lost

    @property
    def dropped(self) -> int:
        """Messages dropped because they came while the port was being reopened."""
        return self._dropped

    def mark_lost(self, t: float | None = None) -> None:
        """The target disappeared: what sounded there is owed a release when it comes back.

        Sends go on to our own port meanwhile (harmless, and other connections keep them).
        """
        with self._lock:
            if not self._lost:
                self._lost = True
                self._owed |= self._sounding
                self._owed_pedals |= self._pedals

    def reconnect(self) -> bool:
        """Connect again to the target if it exists now (see ``stable_port_name``), then send it
        a note-off for every note left on when it was lost, pedal-up, and CC 123 on every
        channel used.  False if the target is not there, or for a virtual or closed port;
        MidiBackendError if reopening fails.
        """
        with self._lock:
            client = self._rt
            if self._closed or self._target is None or client is None or self._find_target(client) is None:
                return False
            self._reopening = True
            self._idle.clear()
        done: bool | None = None  # None: reopening raised, and our port may be closed now
        try:
            done = self._reopen(client)
        finally:
            with self._lock:
                self._reopening = done is None  # then keep dropping sends until a reconnect works
                if done and not self._closed:
                    self._release_owed(client)
                self._idle.set()
        return bool(done)

    def _release_owed(self, client: Any) -> None:
        """Sent twice, ``RELEASE_AGAIN_S`` apart (so in different JACK process cycles: a cycle
        lost to an xrun loses its MIDI), with the lock held so that no new note slips between."""
        messages = [[0x80 | channel, pitch, 0] for channel, pitch in sorted(self._owed)]
        messages += [[0xB0 | channel, 64, 0] for channel in sorted(self._owed_pedals)]
        messages += [[0xB0 | channel, 123, 0] for channel in range(16) if self._channels >> channel & 1]
        if messages:
            for data in messages:
                client.send_message(data)
            time.sleep(RELEASE_AGAIN_S)
            for data in messages:
                client.send_message(data)
            self._last_send = time.monotonic()
        self._owed.clear()
        self._owed_pedals.clear()
        self._lost = False

    def _destroy(self, client: Any) -> None:
        self._idle.wait()  # a reconnect in progress finishes first
        with self._lock:  # never delete while a send is inside rtmidi
            # rtmidi's JACK output hands messages to the next process cycle: closing at once
            # can drop the last note-offs and CC 123 of a shutdown, so let them leave first.
            linger = self._last_send + OUTPUT_DRAIN_S - time.monotonic()
            if linger > 0:
                time.sleep(linger)
            delete_client(client)

    def __enter__(self) -> OutputPort:
        return self


def check_message(message: Sequence[int]) -> list[int]:
    """The message as a list of ints; TypeError/ValueError saying what is wrong with it."""
    try:
        data = [_byte(b) for b in message]
    except TypeError as exc:
        raise TypeError(f"a MIDI message is a sequence of ints, not {message!r}") from exc
    if not data:
        raise ValueError("empty MIDI message")
    if data[0] < 0x80:
        raise ValueError(f"MIDI message must start with a status byte: {data!r}")
    if len(data) > 3 and data[0] != 0xF0:
        raise ValueError(f"MIDI message longer than 3 bytes that is not sysex: {data!r}")
    return data


def _byte(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError("bool is not a MIDI byte")
    number = operator.index(value)  # ints, numpy ints; TypeError otherwise
    if not 0 <= number <= 255:
        raise ValueError(f"MIDI byte out of range 0-255: {number}")
    return number

