"""MIDI input into a bounded queue of ``(time.monotonic(), [bytes...])``, read by a poll thread.

Why a thread polls rtmidi's own queue instead of an rtmidi callback (issue 15): RtMidi's JACK
input calls a callback from inside JACK's process cycle, and python-rtmidi's callback must take
the GIL there.  On a busy interpreter that wait lasts milliseconds (the switch interval is 5 ms),
many times a 32-frame period (0.67 ms at 48 kHz), and a JACK client whose cycle overruns loses
that cycle's MIDI: with ``jackd -R`` at 32 frames a note-off vanished now and then and two phrases
merged into one (reproduced by tests/test_jack_realtime.py).  Without a callback the process
cycle only copies each message into rtmidi's lock-free queue, and no Python ever runs on JACK's
realtime thread.  The same change removes two hazards the callback had: JACK round trips made
by this process while the input received could stall the server for seconds (the process thread
waited for the GIL held by the thread waiting for the server), and deleting the rtmidi object
while its thread waited for the GIL deadlocked the interpreter.

The poll thread wakes every ``POLL_INTERVAL_S``; arrival times come from rtmidi's native delta
times (livegen/io/arrival.py), so the poll interval delays when the engine sees a message but
not the time it is stamped with.  The queue is bounded in messages and in bytes: overflow drops
and counts (``dropped``), except releases, which get ``RELEASE_ROOM`` more.  rtmidi's own queue holds ``RTMIDI_QUEUE_SIZE`` messages between polls.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any, Iterator

from livegen.io.apis import DEFAULT_CLIENT_NAME
from livegen.io.arrival import ArrivalClock
from livegen.io.port import Port

DEFAULT_INPUT_NAME = "in"
DEFAULT_CAPACITY = 10_000
"""Queued input messages before new ones are dropped (minutes of dense playing, seconds of sysex)."""

DEFAULT_BYTE_CAPACITY = 8 * 1024 * 1024
"""...and bytes (a burst of large sysex messages must not take the memory with it)."""

RELEASE_ROOM = 1_024
"""Releases (note-off, sustain pedal up, All Notes Off) are still queued this many messages past
a full queue: dropping one holds a key, and so the phrase, open for good after a flood."""

POLL_INTERVAL_S = 0.001
"""How often the poll thread empties rtmidi's queue (about 2% of one core while idle)."""

FAST_POLL_INTERVAL_S = 0.00025
"""The poll interval while every note-on is answered at once (harmonize mode): the poll's wait,
0.5 ms on average at 1 ms, is then 0.125 ms, for a few per cent more of one core."""

RTMIDI_QUEUE_SIZE = 65_536
"""rtmidi's own queue between two polls: 3 s of a 20,000 messages/s flood, should the poll thread
wait that long for the GIL and a CPU (beyond it, rtmidi drops, uncounted, and prints "message
queue limit reached").  16,384 overflowed under tests/test_flood.py's flood on a 2-core machine
at load 12; the ring costs 32 bytes a message (2 MB), allocated when the port opens."""

TimedMessage = tuple[float, list[int]]
"""``(time.monotonic() at arrival, MIDI bytes)`` as the input queue holds them."""

_CLOSED = object()  # sentinel that wakes readers when an InputPort closes


def is_release(message: list[int]) -> bool:
    """Note-off (or note-on velocity 0), sustain pedal up, or a channel mode message (CC 120-127)."""
    if len(message) < 3:
        return False
    kind = message[0] & 0xF0
    return kind == 0x80 or (kind == 0x90 and message[2] == 0) or \
        (kind == 0xB0 and ((message[1] == 64 and message[2] < 64) or message[1] >= 120))


class InputPort(Port):
    """MIDI input: read with ``get(timeout)`` (None on timeout or once closed, then check
    ``closed``) or iterate (ends when the port closes).

    ``InputPort()`` opens the virtual port ``in`` under the client name; ``pattern`` connects to
    an existing port instead (see ``find_port``).  Messages queued before ``close()`` are still
    returned before the end.  With ``start=False`` nothing is queued until ``start()`` starts
    the poll thread (messages wait inside rtmidi meanwhile); ``close()`` stops and joins it.
    """

    kind = "input"
    _lock_type = threading.RLock  # reconnect() inside paused()

    def __init__(
        self,
        api: str = "auto",
        client_name: str = DEFAULT_CLIENT_NAME,
        pattern: str | None = None,
        *,
        port_name: str = DEFAULT_INPUT_NAME,
        capacity: int = DEFAULT_CAPACITY,
        byte_capacity: int = DEFAULT_BYTE_CAPACITY,
        start: bool = True,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> None:
        if capacity < 1 or byte_capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, not {min(capacity, byte_capacity)}")
        if not poll_interval > 0:
            raise ValueError(f"poll interval must be positive, not {poll_interval}")
        self._capacity = capacity
        self._byte_capacity = byte_capacity
        self._poll_interval = poll_interval
        self.urgent = False  # set by the engine while each note-on is answered at once (harmonize)
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dropped = 0
        # Bytes queued = in - out; each counter has one writer (the poll thread / the reader),
        # so neither needs a lock.
        self._bytes_in = 0
        self._bytes_out = 0
        self._arrivals = ArrivalClock()  # used under the lock only
        self._channels = 0  # bit per MIDI channel heard (release_all)
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None
        super().__init__(api, client_name, pattern, port_name)
        if start:
            self.start()

    @property
    def poll_interval(self) -> float:
        """Seconds between two polls of rtmidi's queue (``FAST_POLL_INTERVAL_S`` while urgent)."""
        return min(self._poll_interval, FAST_POLL_INTERVAL_S) if self.urgent else self._poll_interval

    def _client_options(self) -> dict[str, Any]:
        return {"queue_size_limit": RTMIDI_QUEUE_SIZE}

    def _prepare(self, client: Any) -> None:
        client.ignore_types(sysex=False, timing=False, active_sense=False)

    def start(self) -> None:
        """Start the poll thread (done by the constructor unless ``start=False``); idempotent.
        Messages that arrived since the port opened are queued first, with arrival times
        reconstructed from rtmidi's delta times."""
        with self._lock:
            if self._closed:
                raise ValueError(f"start() on closed MIDI input {self._name!r}")
            if self._poller is None:
                self._poller = threading.Thread(target=self._poll, name=f"midi-in {self._name}", daemon=True)
                self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            self._drain()

    def _drain(self, client: Any = None) -> None:
        """Move what waits in rtmidi's queue into ours, stamped (under the lock: a reconnect or
        ``paused()`` holds it, and then messages wait in rtmidi, in order)."""
        with self._lock:
            client = client if client is not None else self._rt
            if client is None:
                return
            taken = []
            while (item := client.get_message()) is not None:
                taken.append(item)
            if taken:
                now = time.monotonic()
                for message, delta in taken:
                    self._put((self._arrivals.stamp(delta, now), message))

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the poll thread off: messages wait in rtmidi meanwhile and are queued in order
        afterwards.  (Round trips to the JACK server no longer need it: no Python runs on JACK's
        thread.  The hot-plug watcher still pauses around reconnects, which keeps a reconnect of
        this input from racing a poll.)"""
        with self._lock:
            yield

    def reconnect(self) -> bool:
        """Connect again to the port this one was opened against, if it exists now (by name:
        see ``stable_port_name``); False if it does not, or for a virtual or closed port.
        MidiBackendError if reopening fails (the port stays unconnected; try again later)."""
        with self._lock:
            client = self._rt
            if self._closed or self._target is None or client is None or self._find_target(client) is None:
                return False
            self._drain(client)  # what came before the gap keeps its place
            return self._reopen(client)

    def mark_lost(self, t: float | None = None) -> None:
        """The source disappeared: release what it left down (``release_all``)."""
        self.release_all(t)

    def release_all(self, t: float | None = None) -> None:
        """Queue sustain-pedal-up and All Notes Off (CC 64 0, CC 123) on every channel heard so
        far: a keyboard unplugged with a key or the pedal down sends no release, and the engine
        would otherwise wait for one before it ends the phrase."""
        t = time.monotonic() if t is None else t
        for channel in range(16):
            if self._channels >> channel & 1:
                # (left out of _bytes_in, whose only writer is the poll thread: 6 bytes a channel)
                self._queue.put_nowait((t, [0xB0 | channel, 64, 0]))
                self._queue.put_nowait((t, [0xB0 | channel, 123, 0]))

    def _put(self, item: TimedMessage) -> None:
        status = item[1][0] if item[1] else 0
        if 0x80 <= status < 0xF0:
            self._channels |= 1 << (status & 0x0F)  # channels heard, for release_all
        size = len(item[1])
        queued = self._queue.qsize()
        full = queued >= self._capacity or self._bytes_in - self._bytes_out + size > self._byte_capacity
        if full and not (is_release(item[1]) and queued < self._capacity + RELEASE_ROOM):
            self._dropped += 1
        else:
            self._bytes_in += size
            self._queue.put_nowait(item)

    def _destroy(self, client: Any) -> None:
        """Stop and join the poll thread, queue what is left in rtmidi, wake the readers, then
        free the client (no native thread of ours can be inside Python: nothing to wait for)."""
        self._stopping.set()
        try:
            if self._poller is not None and self._poller is not threading.current_thread():
                self._poller.join()
            if self._poller is not None:
                self._drain(client)
        finally:
            self._queue.put(_CLOSED)
            super()._destroy(client)

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def dropped(self) -> int:
        """Messages lost because the queue was full."""
        return self._dropped

    @property
    def pending(self) -> int:
        """Messages waiting in the queue."""
        return max(0, self._queue.qsize() - (1 if self._closed else 0))

    def get(self, timeout: float | None = None) -> TimedMessage | None:
        """The next ``(t, message)``; None if ``timeout`` seconds pass or the port is closed.

        ``timeout=None`` waits until a message arrives or the port closes; ``0`` never waits.
        """
        try:
            if timeout is not None and timeout <= 0:
                item = self._queue.get_nowait()
            else:
                item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _CLOSED:
            self._queue.put(_CLOSED)  # for the next reader
            return None
        self._bytes_out += len(item[1])
        return item

    def __iter__(self) -> Iterator[TimedMessage]:
        while (item := self.get()) is not None:
            yield item

    def __enter__(self) -> InputPort:
        return self
