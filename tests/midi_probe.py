"""A private JACK server and a JACK test client, for tests that go through real MIDI ports.

The fixtures in conftest.py wrap these (``jack_server``, ``midi_probe``); import from here
(``from midi_probe import MidiProbe, wait_until``) for anything more.

``MidiProbe`` talks to rtmidi directly, not through livegen.io.ports, so it can check that
module.  Its input is polled by a thread instead of using an rtmidi callback: a callback makes
the JACK process thread need the GIL, and then any JACK round trip made by this process (opening
or closing a port) can stall the server for seconds, and a callback waiting for the GIL inside
JACK's cycle loses MIDI (see livegen/io/midi_in.py).  A poll interval
of 1 ms bounds the timestamp error; tests must not assert on timing finer than that anyway.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from livegen.bench.jack import JackServer, jack_server
from livegen.io.listing import port_names

TimedMessage = tuple[float, list[int]]


# --- waiting ------------------------------------------------------------------------------------


def wait_until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.005,
               message: str | Callable[[], str] = "condition") -> object:
    """Poll ``condition()`` until it returns something truthy, and return that.

    Raises AssertionError after ``timeout`` seconds; ``message`` (or its result) says what was
    awaited, so failures explain themselves.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout:g} s waiting for {text}")
        time.sleep(interval)


# --- server -------------------------------------------------------------------------------------


@contextmanager
def start_jack_server(startup_timeout: float = 10.0) -> Iterator[JackServer]:
    """Start a private jackd (livegen.bench.jack.jack_server: dummy driver, realtime where
    allowed, synchronous, dies with this process) and point JACK_DEFAULT_SERVER at it.

    Synchronous (``jackd -S``) because these tests check what livegen does with every message,
    and on a host that wakes realtime threads late now and then, asynchronous jackd drops the
    MIDI of a late cycle whatever the client does (tests/test_jack_realtime.py measures both).

    The environment variables this sets are restored on exit.  A jackd that ended by a signal
    (killed by a test, or after not stopping in time) has its registry slot reclaimed
    (``reclaim_jack_server``).
    """
    started: list[JackServer] = []
    try:
        with jack_server(startup_timeout=startup_timeout, prefix="livegen-test", sync=True) as server:
            started.append(server)
            settings = {key: server.env[key] for key in ("JACK_DEFAULT_SERVER", "JACK_NO_START_SERVER")}
            saved = {key: os.environ.get(key) for key in settings}
            os.environ.update(settings)
            try:
                yield server
            finally:
                for key, value in saved.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value
    finally:
        if started and (started[0].process.returncode or 0) < 0:
            reclaim_jack_server(started[0].name)


def reclaim_jack_server(name: str, timeout: float = 10.0) -> None:
    """Free the registry slot of a jackd named ``name`` that was SIGKILLed.

    JACK2 registers servers in a shared-memory table of 8 slots per machine and frees a dead
    server's slot only when a server of the same name starts; unique test names would fill the
    table ("Too many servers already active") for every test run on the machine.  So start one
    under that name, let it register, and stop it cleanly.
    """
    import subprocess

    from livegen.bench.jack import stop_process
    from livegen.io.hotplug import JackServerWatch

    env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
    process = subprocess.Popen(["jackd", "--no-realtime", "--name", name, "-d", "dummy"], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # it listens on its socket only after registering, which reclaims the slot
        wait_until(lambda: process.poll() is not None or JackServerWatch(name).available, timeout, 0.05,
                   f"jackd {name!r} to start again")
    finally:
        stop_process(process, 10.0)


# --- probe --------------------------------------------------------------------------------------


def open_named(client, name: str, port_name: str) -> None:
    """Open ``client``'s port against the port called ``name``: livegen's own open_listed (rtmidi
    opens by index, and a daemon starting beside the test shifts the indices between listing and
    opening, which once connected a probe to another daemon's input)."""
    from livegen.io.listing import open_listed

    open_listed(client, lambda names: names.index(name), port_name)


def port_matcher(client_prefix: str, port: str) -> Callable[[str], bool]:
    """DESIGN.md's rule for finding livegen's ports: ``client:port`` whose client starts with
    ``client_prefix`` (rtmidi makes ``livegen``, ``livegen-01``...)."""

    def matches(name: str) -> bool:
        client, _, port_name = name.rpartition(":")
        return port_name == port and client.startswith(client_prefix)

    return matches


class MidiProbe:
    """A JACK client that plays into a port under test and records what a port sends.

    ``play_into("livegen:in")`` opens an output connected to that port; ``send`` plays a
    message.  ``listen_to("livegen-01:out")`` opens an input connected from that port;
    ``messages`` holds ``(time.monotonic(), [bytes])`` for everything received.  Both take an
    exact port name or a predicate (``port_matcher("livegen", "in")``) and wait for the port to
    appear, so they work against a daemon that is still starting.

    Client names are ``probe``, ``probe-01``..., never ``livegen...``, so the probe is not
    mistaken for livegen's ports.  Close it (or use ``with``) before stopping the server.
    """

    POLL_INTERVAL = 0.001

    def __init__(self, client_name: str = "probe") -> None:
        import rtmidi

        self._rtmidi = rtmidi
        self.client_name = client_name
        self._lock = threading.Lock()
        self._messages: list[TimedMessage] = []
        self._out = None
        self._in = None
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self.playing_into: str | None = None
        self.listening_to: str | None = None
        self._offered: dict[str, str] = {}  # kind -> port name (offer / unplug / replug)
        self._listers: dict[type, object] = {}  # rtmidi class -> its lister client (see _list)

    # ports that exist
    def _list(self, cls) -> list[str]:
        """The ports ``cls`` (MidiOut: destinations, MidiIn: sources) sees, from one lister client
        per kind that lives as long as the probe.

        Not a fresh client per listing: rtmidi activates every JACK client it makes, so polling
        for a port joined and left the graph every 50 ms, and synchronous jackd was seen to stop
        for good right after such a lister missed a notification ("ClientNotify fails name =
        probe-lister notification = 18", then "Driver is not running": every later client is
        refused, and every later test fails)."""
        lister = self._listers.get(cls)
        if lister is None:
            lister = self._listers[cls] = cls(self._rtmidi.API_UNIX_JACK, name=f"{self.client_name}-lister")
        return port_names(lister)

    def destinations(self) -> list[str]:
        """JACK MIDI ports one can play into (livegen's input is one)."""
        return self._list(self._rtmidi.MidiOut)

    def sources(self) -> list[str]:
        """JACK MIDI ports one can listen to (livegen's output is one)."""
        return self._list(self._rtmidi.MidiIn)

    def wait_for_port(self, kind: str, match: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """The first ``destination``/``source`` port equal to ``match`` (or accepted by it)."""
        lister = {"destination": self.destinations, "source": self.sources}[kind]
        accept = match if callable(match) else (lambda name: name == match)
        seen: list[str] = []

        def find() -> str | None:
            seen[:] = lister()
            return next((name for name in seen if accept(name)), None)

        return wait_until(find, timeout, 0.05, lambda: f"a {kind} port {match!r}; ports: {seen}")

    # playing
    def play_into(self, port: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """Open an output connected to ``port``; returns the port's name."""
        if self._out is not None:
            raise RuntimeError(f"probe already plays into {self.playing_into!r}")
        name = self.wait_for_port("destination", port, timeout)
        out = self._rtmidi.MidiOut(self._rtmidi.API_UNIX_JACK, name=self.client_name)
        try:
            open_named(out, name, "play")
        except BaseException:
            out.delete()
            raise
        self._out, self.playing_into = out, name
        return name

    def send(self, message: Sequence[int]) -> float:
        """Send one message; returns ``time.monotonic()`` just before sending."""
        if self._out is None:
            raise RuntimeError("call play_into() or offer('source', ...) first")
        t = time.monotonic()
        self._out.send_message(list(message))
        return t

    def play(self, pitches: Sequence[int], hold: float = 0.08, rest: float = 0.02, channel: int = 0) -> float:
        """Play the pitches one after another; returns the time of the last note-off."""
        released = 0.0
        for pitch in pitches:
            self.send([0x90 | channel, pitch, 90])
            time.sleep(hold)
            released = self.send([0x80 | channel, pitch, 0])
            time.sleep(rest)
        return released

    # listening
    def listen_to(self, port: str | Callable[[str], bool], timeout: float = 10.0) -> str:
        """Open an input connected from ``port`` and start recording; returns the port's name."""
        if self._in is not None:
            raise RuntimeError(f"probe already listens to {self.listening_to!r}")
        name = self.wait_for_port("source", port, timeout)
        inp = self._rtmidi.MidiIn(self._rtmidi.API_UNIX_JACK, name=self.client_name, queue_size_limit=65536)
        try:
            inp.ignore_types(sysex=False, timing=False, active_sense=False)
            open_named(inp, name, "listen")
        except BaseException:
            inp.delete()
            raise
        self._in, self.listening_to = inp, name
        self._start_reader()
        return name

    def _start_reader(self) -> None:
        self._stop.clear()
        self._reader = threading.Thread(target=self._read, name="midi-probe-reader", daemon=True)
        self._reader.start()

    def _stop_reader(self) -> None:
        self._stop.set()
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None

    # standing in for a device that is unplugged and plugged back
    def offer(self, kind: str, port: str) -> str:
        """Open a virtual port that livegen connects to by name, as it would to a device:
        kind ``source`` (a keyboard: ``send`` plays on it) or ``destination`` (a synth: what
        arrives is recorded in ``messages``).  Returns its name, ``client:port``.

        Use one probe per offered port, so its client keeps the probe's name across
        ``unplug``/``replug`` (a second client of one probe is ``probe-01``...).
        """
        if kind not in ("source", "destination"):
            raise ValueError(f"kind is 'source' or 'destination', not {kind!r}")
        if (self._out if kind == "source" else self._in) is not None:
            raise RuntimeError(f"probe already has a {kind} port")
        self._offered[kind] = port
        self._open_offered(kind)
        name = f"{self.client_name}:{port}"
        self.wait_for_port("destination" if kind == "destination" else "source", name)
        return name

    def _open_offered(self, kind: str) -> float:
        port = self._offered[kind]
        if kind == "source":
            client = self._rtmidi.MidiOut(self._rtmidi.API_UNIX_JACK, name=self.client_name)
        else:
            client = self._rtmidi.MidiIn(self._rtmidi.API_UNIX_JACK, name=self.client_name, queue_size_limit=65536)
            client.ignore_types(sysex=False, timing=False, active_sense=False)
        t = time.monotonic()  # the port exists from some instant inside the call below
        try:
            client.open_virtual_port(port)
        except BaseException:
            client.delete()
            raise
        if kind == "source":
            self._out = client
        else:
            self._in = client
            self._start_reader()
        return t

    def unplug(self, kind: str) -> float:
        """Close the offered port and its JACK client, as a device that goes away; returns
        ``time.monotonic()`` once it is gone.  Messages received so far are kept."""
        if kind not in self._offered:
            raise RuntimeError(f"no {kind} port offered")
        attr = "_out" if kind == "source" else "_in"
        if kind == "destination":
            self._stop_reader()
        self._close_client(attr)
        return time.monotonic()

    def replug(self, kind: str) -> float:
        """Open the offered port again under the same name; returns ``time.monotonic()`` from
        just before the port was created (the earliest instant anyone could see it)."""
        if kind not in self._offered:
            raise RuntimeError(f"no {kind} port offered")
        if (self._out if kind == "source" else self._in) is not None:
            raise RuntimeError(f"the {kind} port is plugged in")
        return self._open_offered(kind)

    def _read(self) -> None:
        inp = self._in
        while not self._stop.is_set():
            batch = []
            while (item := inp.get_message()) is not None:
                batch.append(item)
            if batch:
                # The last message arrived at most one poll interval ago; earlier ones are
                # placed back from it by rtmidi's delta times (seconds since the previous one).
                t = time.monotonic()
                stamped = []
                for message, delta in reversed(batch):
                    stamped.append((t, message))
                    t -= delta
                with self._lock:
                    self._messages.extend(reversed(stamped))
            time.sleep(self.POLL_INTERVAL)

    @property
    def messages(self) -> list[TimedMessage]:
        """A snapshot of everything received so far, oldest first."""
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def wait_for(self, predicate: Callable[[list[TimedMessage]], object], timeout: float = 10.0) -> list[TimedMessage]:
        """Poll until ``predicate(messages)`` is truthy; returns that snapshot of messages.

        Raises AssertionError listing what was received if ``timeout`` passes first.
        """
        snapshot: list[TimedMessage] = []

        def check():
            snapshot[:] = self.messages
            return bool(predicate(snapshot))

        wait_until(check, timeout, 0.005, lambda: f"predicate on received messages; got {snapshot}")
        return snapshot

    def wait_for_count(self, count: int, timeout: float = 10.0) -> list[TimedMessage]:
        """Wait until at least ``count`` messages have arrived."""
        return self.wait_for(lambda messages: len(messages) >= count, timeout)

    # closing
    def close(self) -> None:
        """Stop the reader and close both ports; idempotent."""
        self._stop_reader()
        for attr in ("_in", "_out"):
            self._close_client(attr)
        listers, self._listers = list(self._listers.values()), {}
        for lister in listers:
            lister.delete()

    def _close_client(self, attr: str) -> None:
        """Close and free the rtmidi client in ``attr`` (exactly once: a call after delete() crashes)."""
        client = getattr(self, attr)
        setattr(self, attr, None)
        if client is not None:
            try:
                client.close_port()
            finally:
                client.delete()

    def __enter__(self) -> MidiProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- reading what arrived ----------------------------------------------------------------------


def _is_on(message: list[int]) -> bool:
    return message[0] & 0xF0 == 0x90 and len(message) > 2 and message[2] > 0


def _is_off(message: list[int]) -> bool:
    kind = message[0] & 0xF0
    return kind == 0x80 or (kind == 0x90 and len(message) > 2 and message[2] == 0)


def note_ons(messages: list[TimedMessage], channel: int | None = None) -> list[TimedMessage]:
    return [(t, m) for t, m in messages if _is_on(m) and (channel is None or m[0] & 0x0F == channel)]


def note_offs(messages: list[TimedMessage], channel: int | None = None) -> list[TimedMessage]:
    return [(t, m) for t, m in messages if _is_off(m) and (channel is None or m[0] & 0x0F == channel)]


def unmatched(messages: list[TimedMessage], channel: int | None = None) -> dict[tuple[int, int], int]:
    """(channel, pitch) -> note-ons not closed by a note-off, or by CC 123 on their channel."""
    open_notes: dict[tuple[int, int], int] = {}
    for _, m in messages:
        ch = m[0] & 0x0F
        if channel is not None and ch != channel:
            continue
        if _is_on(m):
            open_notes[(ch, m[1])] = open_notes.get((ch, m[1]), 0) + 1
        elif _is_off(m) and open_notes.get((ch, m[1])):
            open_notes[(ch, m[1])] -= 1
        elif m[0] & 0xF0 == 0xB0 and m[1] == 123:
            for key in [k for k in open_notes if k[0] == ch]:
                open_notes[key] = 0
    return {k: v for k, v in open_notes.items() if v}


def sounding_at(messages: list[TimedMessage], t: float, channel: int | None = None) -> set[tuple[int, int]]:
    """(channel, pitch) of the notes that were on, as received, just before ``t``."""
    return set(unmatched([(at, m) for at, m in messages if at < t], channel))


def closed_at(messages: list[TimedMessage], notes: set[tuple[int, int]], after: float) -> float | None:
    """When the last of ``notes`` was closed (note-off, or CC 123 on its channel) at or after
    ``after``; None while any of them is still open.  Barge-in and panic are measured with it:
    from the press to the last note-off of the notes sounding at the press, not of the whole run."""
    closing: dict[tuple[int, int], float] = {}
    for at, m in messages:
        if at < after:
            continue
        channel = m[0] & 0x0F
        if _is_off(m) and (channel, m[1]) in notes:
            closing.setdefault((channel, m[1]), at)
        elif m[0] & 0xF0 == 0xB0 and len(m) > 2 and m[1] == 123:
            for key in notes:
                if key[0] == channel:
                    closing.setdefault(key, at)
    return max(closing.values()) if notes and len(closing) == len(notes) else None


def press_while_sounding(probe: MidiProbe, message: Sequence[int], channel: int, timeout: float = 10.0
                         ) -> tuple[float, set[tuple[int, int]]]:
    """Send ``message`` just after a fresh answer note-on arrived on ``channel`` (so that note has
    most of its length still to sound); returns the send time and the notes sounding at it.

    A barge-in test that presses when nothing happens to be sounding checks nothing: this fails
    instead when no note is sounding at the press."""
    before = len(note_ons(probe.messages, channel))
    wait_until(lambda: len(note_ons(probe.messages, channel)) > before, timeout, 0.0005,
               f"a fresh note-on on channel {channel + 1}")
    pressed = probe.send(message)
    time.sleep(0.02)  # what was stamped before the press but not yet read (1 ms polls) comes in
    sounding = sounding_at(probe.messages, pressed, channel)
    assert sounding, f"nothing sounded on channel {channel + 1} at the press: {probe.messages[-6:]}"
    return pressed, sounding
