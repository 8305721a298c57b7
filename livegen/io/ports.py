"""MIDI ports over python-rtmidi: pick an API, list ports, open inputs and outputs.

Names used here, as rtmidi and ``livegen ports`` use them: an *input* is a port livegen can read
from (another program's output, a keyboard), an *output* is one it can write to.

- ``InputPort``: the rtmidi callback only stamps (``time.monotonic()`` time, from rtmidi's
  native deltas: livegen/io/arrival.py) and queues
  ``(t, [bytes...])``; the engine thread reads with ``get(timeout)`` (the engine's
  ``MessageSource``) or iterates.  The queue is bounded in messages and in bytes: overflow drops and counts
  (``dropped``), it never blocks the callback.  Sysex, clock and active sensing are let
  through; the engine ignores what it does not use.
- ``OutputPort``: ``send(message)`` validates, takes a lock, sends.
- Without a pattern, a port is a virtual port (``in`` / ``out``) under the client name; with
  one, livegen opens its own port and connects it to the existing port that matches
  (``find_port``: exact name, then case-insensitive substring).

rtmidi with JACK, as observed with python-rtmidi 1.5.8 / RtMidi 5.0.0 and jackd 1.9.21:

- Every ``MidiIn``/``MidiOut`` object is its own JACK client, created by the constructor, so
  the first object takes the client name (``livegen``) and later ones get ``livegen-01``,
  ``livegen-02``...; ``open_ports`` opens the input first, giving ``livegen:in`` and
  ``livegen-01:out`` (DESIGN.md's contract).  Port names are full ``client:port`` strings.
- No server: the constructor raises ``rtmidi.SystemError`` ("MidiInJack::initialize: JACK
  server not running?"; an ``OSError``) after libjack printed five lines to stderr.  ALSA without
  /dev/snd/seq is the same with "error creating ALSA sequencer client object".  Both become one
  ``MidiBackendError`` line here, with the native noise silenced.
- The input callback runs on the JACK process thread (ALSA: RtMidi's own thread) and must take
  the GIL; python-rtmidi holds the GIL through every call, including JACK server round trips
  (opening or closing a client or port, connecting).  Two consequences, both reproduced here:
  * Round trips made while an armed input of this process is receiving stall the JACK graph:
    the server waits for that client's cycle, whose thread waits for the GIL held by the thread
    waiting for the server.  Each one then takes seconds (6-16 s with a 48 messages/s clock
    stream) until jackd's timeout breaks it.  So an InputPort does all its round trips before
    arming its callback, ``open_ports`` arms the input only after the output is open
    (``InputPort(start=False)`` + ``start()``), and ``PortPair.close`` closes the input first.
    Rule for callers: open every port, then start inputs; close inputs first.
  * Destroying a ``MidiIn`` while its thread waits for the GIL deadlocks the interpreter:
    libjack ``pthread_cancel``s that thread, which dies holding the GIL's mutex.
    ``InputPort.close`` cancels the callback, waits until the native thread is provably out of
    Python (or a grace period passes), and only then closes and deletes.
- Any method call on an rtmidi object after ``delete()`` is a segmentation fault, so every
  object here is deleted exactly once: ``close()`` takes it out of the port under a lock.
- ``get_message()`` returns nothing (and warns) while a callback is set, so messages that
  arrive before ``start()`` are taken from rtmidi's own queue before the callback is set.
- ``get_ports()`` on an object that already exists makes no server round trip (libjack reads the
  port list from shared memory, ALSA asks the kernel): 0.2 ms, safe while an input is armed, so
  hot-plug (livegen/io/hotplug.py) polls the ports' own objects, never a new lister client.
- Reconnecting (``reconnect()``) is ``close_port()`` + ``open_port()`` on the same object (rtmidi
  has no "connect" alone), so the port keeps its name; with JACK the port is unregistered and
  registered again, which drops connections others made to it.  Those are round trips, so an
  armed input is paused around them (``InputPort.paused()``), by the rule above.  (Measured
  here: reopening a port under a 2000 messages/s stream took 30-60 ms even without the pause;
  the stalls were seen with clients opening and closing.  The pause costs up to 0.2 s.)
- ``MidiOut.close_port()`` waits up to 1 s for a process cycle to drain its buffer, which never
  comes once the server died: closing then takes 1 s per output, not forever.
- When jackd dies, nothing in rtmidi says so: sends still succeed and ``get_ports()`` keeps
  returning the last port list; libjack prints "JackSocketClientChannel read fail" on stderr.
  hotplug.JackServerWatch notices it from the server's socket instead.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import operator
import os
import queue
import re
import sys
import threading
import time
from typing import Any, Iterator, NamedTuple, Sequence

from livegen.errors import LivegenError, PortNotFoundError
from livegen.io.arrival import ArrivalClock

log = logging.getLogger(__name__)

API_CHOICES = ("auto", "alsa", "jack", "coremidi", "winmm")
"""Values of ``--midi-api`` (``coremidi``/``winmm`` work where python-rtmidi compiled them)."""

DEFAULT_CLIENT_NAME = "livegen"
DEFAULT_INPUT_NAME = "in"
DEFAULT_OUTPUT_NAME = "out"
DEFAULT_CAPACITY = 10_000
"""Queued input messages before new ones are dropped (minutes of dense playing, seconds of sysex)."""

DEFAULT_BYTE_CAPACITY = 8 * 1024 * 1024
"""...and bytes (a burst of large sysex messages must not take the memory with it)."""

ALSA_SEQUENCER = "/dev/snd/seq"
RELEASE_AGAIN_S = 0.01
"""A reconnected output repeats its note-offs and CC 123 this much later (OutputPort.reconnect)."""
OUTPUT_DRAIN_S = 0.05
"""An output lingers this long after its last send before it closes, so queued messages leave."""

# How long InputPort.close waits for an in-flight callback when it cannot prove there is none.
_CALLBACK_GRACE_S = 0.2
_CALLBACK_POLL_S = 0.005

_API_CONSTANTS = {  # our name -> name of the rtmidi constant
    "alsa": "API_LINUX_ALSA",
    "jack": "API_UNIX_JACK",
    "coremidi": "API_MACOSX_CORE",
    "winmm": "API_WINDOWS_MM",
}

_HINTS = {
    "alsa": "use --midi-api jack",
    "jack": "start jackd or use --midi-api alsa",
}

TimedMessage = tuple[float, list[int]]
"""``(time.monotonic() at arrival, MIDI bytes)`` as the input queue holds them."""


class MidiBackendError(LivegenError, OSError):
    """A MIDI API that is not compiled in, cannot connect (no JACK server...), or failed."""


# --- APIs ---------------------------------------------------------------------------------------


def _rtmidi() -> Any:
    """The rtmidi module, imported on first use (``livegen --help`` must start fast)."""
    try:
        import rtmidi
    except ImportError as exc:  # pragma: no cover - a dependency, but say what to do
        raise MidiBackendError("python-rtmidi is not installed (pip install python-rtmidi)") from exc
    return rtmidi


def compiled_apis() -> list[str]:
    """Names of the MIDI APIs this python-rtmidi build has, in our preference order."""
    rtmidi = _rtmidi()
    compiled = set(rtmidi.get_compiled_api())
    return [name for name, const in _API_CONSTANTS.items() if getattr(rtmidi, const) in compiled]


def _check_api_name(api: str) -> None:
    if api not in API_CHOICES:
        raise ValueError(f"unknown MIDI API {api!r}; choose one of {', '.join(API_CHOICES)}")


def _api_constant(api: str) -> int:
    _check_api_name(api)
    if api == "auto":
        raise ValueError("resolve 'auto' first")
    available = compiled_apis()
    if api not in available:
        raise MidiBackendError(
            f"MIDI API {api!r} is not compiled into python-rtmidi here; "
            f"available: {', '.join(available) or 'none'}"
        )
    return getattr(_rtmidi(), _API_CONSTANTS[api])


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for a moment: libjack and alsa-lib print their failures there.

    Python's own ``sys.stderr`` object is flushed first and works again afterwards; only output
    written by any thread during the block is lost, so keep the block short.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (pythonw, some embedders)
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _describe_failure(api: str, exc: BaseException | None) -> str:
    """One line saying why ``api`` cannot be used, with what to do about it."""
    if api == "jack":
        server = os.environ.get("JACK_DEFAULT_SERVER")
        which = f"JACK server {server!r}" if server else "JACK server"
        return f"{which} not running ({_HINTS['jack']})"
    if api == "alsa":
        if sys.platform.startswith("linux") and not os.path.exists(ALSA_SEQUENCER):
            return f"ALSA sequencer not available: {ALSA_SEQUENCER} is missing (load snd-seq or {_HINTS['alsa']})"
        return f"cannot open the ALSA sequencer: {exc} ({_HINTS['alsa']})"
    return f"cannot open the {api} MIDI API: {exc}"


def _new_client(api: str, kind: str, client_name: str) -> Any:
    """A fresh ``rtmidi.MidiIn`` (kind ``input``) or ``MidiOut``; a MidiBackendError if it fails."""
    rtmidi = _rtmidi()
    const = _api_constant(api)
    if api == "alsa" and sys.platform.startswith("linux") and not os.path.exists(ALSA_SEQUENCER):
        raise MidiBackendError(_describe_failure(api, None))
    cls = rtmidi.MidiIn if kind == "input" else rtmidi.MidiOut
    try:
        with _quiet_native_stderr():
            return cls(const, name=client_name)
    except rtmidi.RtMidiError as exc:
        raise MidiBackendError(_describe_failure(api, exc)) from exc


def _delete(client: Any) -> None:
    """Close and free an rtmidi object; the caller guarantees this happens once per object."""
    try:
        client.close_port()
    finally:
        client.delete()


def _probe(api: str) -> str | None:
    """None if ``api`` can connect now, else the one-line reason."""
    try:
        _delete(_new_client(api, "output", f"{DEFAULT_CLIENT_NAME}-probe"))
    except MidiBackendError as exc:
        return str(exc)
    return None


def resolve_api(api: str = "auto") -> str:
    """The concrete API name for ``api``, checked to connect; MidiBackendError says why not.

    ``auto`` takes the first compiled API that connects, in the order alsa (only where
    /dev/snd/seq exists, on Linux), jack, coremidi, winmm.
    """
    _check_api_name(api)
    if api != "auto":
        reason = _probe(api)
        if reason is not None:
            raise MidiBackendError(reason)
        return api
    reasons = []
    for name in compiled_apis():
        reason = _probe(name)
        if reason is None:
            return name
        reasons.append(f"{name}: {reason}")
    raise MidiBackendError(f"no usable MIDI API: {'; '.join(reasons) or 'none compiled into python-rtmidi'}")


# --- listing and matching -------------------------------------------------------------------------


def list_ports(api: str = "auto") -> dict[str, list[str]]:
    """``{"inputs": [...], "outputs": [...]}`` for one API (``auto`` resolves first)."""
    api = resolve_api(api) if api == "auto" else api
    lister_name = f"{DEFAULT_CLIENT_NAME}-ports"
    result = {}
    for kind, key in (("input", "inputs"), ("output", "outputs")):
        client = _new_client(api, kind, lister_name)
        try:
            result[key] = list(client.get_ports())
        finally:
            _delete(client)
    return result


def list_all_ports(errors: dict[str, str] | None = None) -> dict[str, dict[str, list[str]]]:
    """``list_ports`` for every compiled API that connects now, keyed by API name.

    APIs that cannot connect are left out; pass a dict as ``errors`` to get their reasons.
    """
    found = {}
    for api in compiled_apis():
        try:
            found[api] = list_ports(api)
        except MidiBackendError as exc:
            if errors is not None:
                errors[api] = str(exc)
    return found


def find_port(names: Sequence[str], pattern: str, kind: str) -> tuple[int, str]:
    """``(index, name)`` of the port in ``names`` that ``pattern`` picks.

    An exact name wins, then a case-insensitive exact name, then the first name that contains
    ``pattern`` case-insensitively, in the backend's order.  When several names contain it, the
    first is taken and a warning names the others: a device often has several ports and the
    first is usually the main one ("Keystation 49 MIDI 1" before "... MIDI 2"); pass a longer
    pattern to pick another.  ``kind`` ("input" or "output") only words the error, a
    PortNotFoundError listing the ports that exist.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"port pattern must be a string, not {type(pattern).__name__}")
    if not pattern:
        raise ValueError("empty port pattern")
    for index, name in enumerate(names):
        if name == pattern:
            return index, name
    folded = pattern.casefold()
    for index, name in enumerate(names):
        if name.casefold() == folded:
            return index, name
    matches = [(index, name) for index, name in enumerate(names) if folded in name.casefold()]
    if not matches:
        existing = ", ".join(names) if names else "none"
        raise PortNotFoundError(f"no MIDI {kind} port matches {pattern!r}; {kind}s are: {existing}")
    if len(matches) > 1:
        others = ", ".join(name for _, name in matches[1:])
        log.warning("MIDI %s pattern %r matches %d ports; using %r (also: %s)",
                    kind, pattern, len(matches), matches[0][1], others)
    return matches[0]


def stable_port_name(name: str) -> str:
    """A port's name without ALSA's trailing ``client:port`` address (``Keys:Keys MIDI 1 20:0``
    -> ``Keys:Keys MIDI 1``): a replugged device keeps its name, not always its numbers."""
    return _ALSA_ADDRESS.sub("", name)


_ALSA_ADDRESS = re.compile(r" \d+:\d+$")


# --- ports ----------------------------------------------------------------------------------------


class _Port:
    """What inputs and outputs share: opening (virtual or by pattern), naming, closing."""

    kind = ""  # "input" or "output"
    _lock_type: Any = threading.Lock

    def __init__(self, api: str, client_name: str, pattern: str | None, port_name: str) -> None:
        if not client_name:
            raise ValueError("empty MIDI client name")
        if not port_name:
            raise ValueError("empty MIDI port name")
        self._lock = self._lock_type()
        self._closed = False
        self._rt: Any = None
        self._api = resolve_api(api) if api == "auto" else api
        self._client_name = client_name
        self._target: str | None = None
        self._port_name = port_name
        self._name = f"{client_name}:{port_name}"
        rtmidi = _rtmidi()
        client = _new_client(self._api, self.kind, client_name)
        try:
            self._prepare(client)
            before = self._own_side_ports(client_name)
            try:
                if pattern is None:
                    client.open_virtual_port(port_name)
                else:
                    index, self._target = find_port(client.get_ports(), pattern, self.kind)
                    client.open_port(index, port_name)
            except (rtmidi.RtMidiError, NotImplementedError) as exc:
                where = "a virtual port" if pattern is None else f"{self._target!r}"
                raise MidiBackendError(f"cannot open MIDI {self.kind} {where} ({self._api}): {exc}") from exc
            self._name = self._resolve_name(before, client_name, port_name)
        except BaseException:
            self._destroy(client)
            raise
        self._rt = client

    # hooks
    def _prepare(self, client: Any) -> None:
        """Configure the fresh rtmidi object before its port opens."""

    def _destroy(self, client: Any) -> None:
        _delete(client)

    # naming
    def _own_side_ports(self, client_name: str) -> list[str] | None:
        """Ports on the side where our own port will appear (an input port is a destination,
        listed by an rtmidi output object, and the other way round); None if unavailable."""
        other = "output" if self.kind == "input" else "input"
        try:
            lister = _new_client(self._api, other, f"{client_name}-lister")
        except MidiBackendError:
            return None
        try:
            return list(lister.get_ports())
        finally:
            _delete(lister)

    def _resolve_name(self, before: list[str] | None, client_name: str, port_name: str) -> str:
        """Our port's full name as others see it (``livegen-01:out``; ALSA adds ``128:0``)."""
        fallback = f"{client_name}:{port_name}"
        after = self._own_side_ports(client_name)
        if before is None or after is None:
            return fallback
        new = [n for n in after if n not in before and n.startswith(client_name) and port_name in n]
        return new[0] if len(new) == 1 else fallback

    # public
    @property
    def api(self) -> str:
        """The API this port uses (``auto`` already resolved)."""
        return self._api

    @property
    def client_name(self) -> str:
        return self._client_name

    @property
    def name(self) -> str:
        """This port's full name as other programs see it, e.g. ``livegen:in``."""
        return self._name

    @property
    def target(self) -> str | None:
        """The existing port this one is connected to, or None for a virtual port."""
        return self._target

    @property
    def virtual(self) -> bool:
        return self._target is None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the port and free its MIDI client; safe to call any number of times."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client, self._rt = self._rt, None
        self._before_destroy()
        if client is not None:
            self._destroy(client)

    def _before_destroy(self) -> None:
        """Runs once in close() before the rtmidi object goes."""

    # hot-plug (see livegen/io/hotplug.py)
    def _find_target(self, client: Any) -> int | None:
        """Index of the target in ``client``'s current port list (no server round trip)."""
        if self._target is None:
            return None
        wanted = stable_port_name(self._target)
        for index, name in enumerate(client.get_ports()):
            if stable_port_name(name) == wanted:
                return index
        return None

    def target_present(self) -> bool | None:
        """Whether the port this one was opened against exists now; None for a virtual or
        closed port.  Cheap enough to poll several times a second (see the module docstring)."""
        with self._lock:
            if self._closed or self._target is None or self._rt is None:
                return None
            return self._find_target(self._rt) is not None

    def _reopen(self, client: Any) -> bool:
        """Close our port and open it again against the target, whose index may have changed
        (and whose ALSA address may have: ``_target`` takes its new name).  The caller makes sure
        no callback of this process can be waiting for the GIL (the round trips below)."""
        index = self._find_target(client)
        if index is None:
            return False
        name = client.get_ports()[index]
        client.close_port()
        try:
            client.open_port(index, self._port_name)
        except (_rtmidi().RtMidiError, NotImplementedError) as exc:
            raise MidiBackendError(f"cannot reconnect MIDI {self.kind} {name!r} ({self._api}): {exc}") from exc
        self._target = name
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        to = f" -> {self._target!r}" if self._target else " (virtual)"
        return f"<{type(self).__name__} {self._name!r}{to} {self._api} {state}>"


_CLOSED = object()  # sentinel that wakes readers when an InputPort closes


class InputPort(_Port):
    """MIDI input into a bounded queue of ``(time.monotonic(), [bytes...])``.

    ``InputPort()`` opens the virtual port ``in`` under the client name; ``pattern`` connects to
    an existing port instead (see ``find_port``).  Read with ``get(timeout)`` (None on timeout
    or once closed, then check ``closed``) or iterate (ends when the port closes).  Messages
    queued before ``close()`` are still returned before the end.  With ``start=False`` nothing
    is queued until ``start()`` (messages wait inside rtmidi meanwhile, up to 1024).
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
    ) -> None:
        if capacity < 1 or byte_capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, not {min(capacity, byte_capacity)}")
        self._capacity = capacity
        self._byte_capacity = byte_capacity
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._dropped = 0
        # Bytes queued = in - out; each counter has one writer (the callback / the reader), so
        # neither needs a lock.
        self._bytes_in = 0
        self._bytes_out = 0
        self._calls = 0  # callback invocations (written by the callback thread only)
        self._arrivals = ArrivalClock()  # used by the callback thread only
        self._keep: list[Any] = []  # rtmidi's callback tuples, kept alive past cancel (see _arm)
        self._armed = False
        self._channels = 0  # bit per MIDI channel heard (release_all)
        super().__init__(api, client_name, pattern, port_name)
        if start:
            self.start()

    def _prepare(self, client: Any) -> None:
        client.ignore_types(sysex=False, timing=False, active_sense=False)

    def start(self) -> None:
        """Arm the callback (done by the constructor unless ``start=False``); idempotent.

        Make every other port change of this process first (see the module docstring).
        Messages that arrived since the port opened are queued first, with arrival times
        reconstructed from rtmidi's delta times.
        """
        with self._lock:
            if self._closed:
                raise ValueError(f"start() on closed MIDI input {self._name!r}")
            if not self._armed:
                self._arm(self._rt, [])

    def _arm(self, client: Any, taken: list[TimedMessage]) -> None:
        """Queue ``taken`` and what waits in rtmidi's own queue, then set the callback.

        rtmidi keeps what arrives without a callback in its own queue, which it will not read
        once a callback is set; take it first (a message landing between this and set_callback
        stays there unread: a window of microseconds).
        """
        early = []
        while (item := client.get_message()) is not None:
            early.append(item)
        now = time.monotonic()
        # Two upper bounds on each arrival, the tighter wins: rtmidi's deltas (seconds since the
        # previous message) counted back from now, and the ArrivalClock, anchored by earlier
        # messages if there were any (a pause); every delta goes through the clock, in order.
        back, t = [], now
        for _, delta in reversed(early):
            back.append(t)
            t -= delta
        floor = taken[-1][0] if taken else float("-inf")
        stamped = [(max(min(self._arrivals.stamp(delta, now), bound), floor), message)
                   for (message, delta), bound in zip(early, reversed(back))]
        for item in taken + stamped:  # before any callback message, to keep the order
            self._put(item)
        client.set_callback(self._callback)
        self._armed = True
        # python-rtmidi drops its reference to the (func, data) tuple it gave C++ when the
        # callback is cancelled; a native thread already inside the callback would then read
        # freed memory.  Our own references make such a late call harmless.
        self._keep += [r for r in gc.get_referents(client) if isinstance(r, tuple) and r[:1] == (self._callback,)]

    def _disarm(self, client: Any) -> list[TimedMessage]:
        """Cancel the callback and return once no call of it can be in flight; returns what
        rtmidi queued meanwhile, stamped (the ArrivalClock is ours while no callback runs).

        Proof that none is in flight: the callback ran again after the cancel (at most one call
        can be pending), or the native thread queued a later message inside rtmidi (it handles
        messages in order, so it is past any callback); else a grace period.
        """
        taken: list[TimedMessage] = []
        if not self._armed:
            return taken
        client.cancel_callback()
        self._armed = False
        calls = self._calls
        deadline = time.monotonic() + _CALLBACK_GRACE_S
        while time.monotonic() < deadline:
            time.sleep(_CALLBACK_POLL_S)  # releases the GIL for a waiting callback
            if self._calls != calls:
                break
            item = client.get_message()
            if item is not None:
                taken.append((self._arrivals.stamp(item[1], time.monotonic()), item[0]))
                break
        return taken

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the callback off (messages wait in rtmidi, then are queued in order) while this
        process makes JACK round trips, e.g. reconnecting ports (module docstring).  Pausing
        costs up to 0.2 s when nothing is arriving (the proof that no callback is in flight)."""
        with self._lock:
            client = self._rt
            if self._closed or not self._armed or client is None:
                yield
                return
            taken = self._disarm(client)
            try:
                yield
            finally:
                self._arm(client, taken)

    def reconnect(self) -> bool:
        """Connect again to the port this one was opened against, if it exists now (by name:
        see ``stable_port_name``); False if it does not, or for a virtual or closed port.
        MidiBackendError if reopening fails (the port stays unconnected; try again later)."""
        with self._lock:
            client = self._rt
            if self._closed or self._target is None or client is None or self._find_target(client) is None:
                return False
            armed = self._armed
            taken = self._disarm(client)
            try:
                return self._reopen(client)
            finally:
                if armed:
                    self._arm(client, taken)

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
                # (left out of _bytes_in, whose only writer is the callback: 6 bytes a channel)
                self._queue.put_nowait((t, [0xB0 | channel, 64, 0]))
                self._queue.put_nowait((t, [0xB0 | channel, 123, 0]))

    def _put(self, item: TimedMessage) -> None:
        status = item[1][0] if item[1] else 0
        if 0x80 <= status < 0xF0:
            self._channels |= 1 << (status & 0x0F)  # channels heard, for release_all
        size = len(item[1])
        if self._queue.qsize() >= self._capacity or \
                self._bytes_in - self._bytes_out + size > self._byte_capacity:
            self._dropped += 1
        else:
            self._bytes_in += size
            self._queue.put_nowait(item)

    def _callback(self, event: tuple[list[int], float], data: object = None) -> None:
        """rtmidi's callback, on its own native thread: stamp, queue, nothing else.

        The stamp comes from rtmidi's native delta times (see livegen/io/arrival.py): this
        callback may run milliseconds late, waiting for the GIL."""
        now = time.monotonic()
        self._calls += 1
        if not self._closed:
            self._put((self._arrivals.stamp(event[1], now), event[0]))

    def _before_destroy(self) -> None:
        self._queue.put(_CLOSED)  # wake readers first, even if tearing down the client hangs

    def _destroy(self, client: Any) -> None:
        # Order matters (see the module docstring): stop callbacks, let an in-flight one leave
        # Python, then close.
        try:
            self._disarm(client)
        finally:
            _delete(client)

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


class OutputPort(_Port):
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
        data = _check_message(message)
        with self._lock:
            if self._closed:
                raise ValueError(f"send() on closed MIDI output {self._name!r}")
            self._track(data)
            if self._reopening:
                self._dropped += 1
                return
            try:
                self._rt.send_message(data)
            except _rtmidi().RtMidiError as exc:
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
        MidiBackendError if reopening fails.  Pause any armed input of this process around
        it (``InputPort.paused``): reopening makes JACK round trips.
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
            _delete(client)

    def __enter__(self) -> OutputPort:
        return self


def _check_message(message: Sequence[int]) -> list[int]:
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


class PortPair(NamedTuple):
    """An input and an output opened together; ``with open_ports(...) as (inp, out):``."""

    input: InputPort
    output: OutputPort

    def close(self) -> None:
        """Input first: its callback must be off before the output's JACK round trips."""
        try:
            self.input.close()
        finally:
            self.output.close()

    def __enter__(self) -> PortPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_ports(
    api: str = "auto",
    client_name: str = DEFAULT_CLIENT_NAME,
    input_pattern: str | None = None,
    output_pattern: str | None = None,
    *,
    capacity: int = DEFAULT_CAPACITY,
) -> PortPair:
    """Open livegen's input and output on one API (virtual ``in``/``out`` without patterns).

    The input opens first so that with JACK it is ``livegen:in`` and the output
    ``livegen-01:out``, and starts last (see the module docstring).  If anything fails, what
    was opened is closed again.
    """
    api = resolve_api(api)
    inp = InputPort(api, client_name, input_pattern, capacity=capacity, start=False)
    try:
        out = OutputPort(api, client_name, output_pattern)
        try:
            inp.start()
        except BaseException:
            out.close()
            raise
    except BaseException:
        inp.close()
        raise
    return PortPair(inp, out)


__all__ = [
    "API_CHOICES",
    "DEFAULT_CAPACITY",
    "DEFAULT_CLIENT_NAME",
    "InputPort",
    "MidiBackendError",
    "OutputPort",
    "PortPair",
    "TimedMessage",
    "compiled_apis",
    "find_port",
    "list_all_ports",
    "list_ports",
    "open_ports",
    "resolve_api",
    "stable_port_name",
]
