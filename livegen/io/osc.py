"""OSC in and out over UDP (python-osc parses and builds the packets; the sockets are ours).

In: ``OscReceiver`` listens on one UDP socket (127.0.0.1 unless told otherwise) on its own
thread and turns ``/livegen/NAME args`` into ``on_setting(NAME, value)``; the daemon hands that to
``Session.command``, the path a CC knob's change takes, so OSC, knobs and the view change
settings one way.  What each address accepts is one entry of ``SETTINGS``: a later setting
(memory weight, harmonize voices) joins OSC with one more entry once the session applies it.
Anything else (not OSC, an unknown address, wrong or out-of-range arguments) is counted and
ignored; the first, tenth, hundredth... of each kind is logged as an ``osc_ignored`` event.

Out: ``OscSender.observe`` turns the session's records (its log records, plus player notes and
state changes) into ``/livegen/state s``, ``/livegen/note ssiii`` and ``/livegen/phrase i``.  The
caller only puts a tuple on a bounded queue (dropped and counted when full); the sender thread
builds and sends the packets, so OSC never blocks the engine or the scheduler.  Its socket is
connected to the one destination, so it accepts nothing from anyone else.

Neither class imports the engine or torch.
"""

from __future__ import annotations

import math
import queue
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from pythonosc.parsing import osc_types
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from livegen import presets
from livegen.errors import LivegenError

PREFIX = "/livegen/"
LOOPBACK = "127.0.0.1"
MAX_DATAGRAM = 65536
MAX_BUNDLE_DEPTH = 4
ARG_SIZES = {"i": 4, "f": 4, "d": 8, "h": 8, "T": 0, "F": 0}  # and "s": a padded string
POLL_S = 0.1  # how long the threads wait before checking for stop


class OscError(LivegenError, OSError):
    """An OSC socket could not be opened (bad host, port in use...)."""


@dataclass(frozen=True)
class Setting:
    """What one ``/livegen/NAME`` address takes, and the value it hands the session.

    kind: ``float`` or ``int`` (one number in ``low..high``, times ``scale``), ``str`` (one
    string, one of ``choices`` when given), ``switch`` (one number or bool: on when not 0) or
    ``trigger`` (no argument; a button's ``1`` fires and its ``0`` on release does nothing).
    """

    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[str, ...] = ()
    scale: float = 1.0  # session unit per OSC unit (the gap: ms in, seconds out)

    @property
    def tag(self) -> str:
        """The OSC type tag it expects, for documentation."""
        return {"float": "f", "int": "i", "str": "s", "switch": "i", "trigger": ""}[self.kind]

    def parse(self, args: Sequence[Any]) -> object:
        """The session value for these OSC arguments; None for a trigger's release.

        Raises ValueError saying what was expected.
        """
        if self.kind == "trigger":
            if not args:
                return True
            if len(args) == 1 and _is_number(args[0]):
                return True if args[0] else None
            raise ValueError(f"takes no argument (or one number), got {_show(args)}")
        if len(args) != 1:
            raise ValueError(f"takes one {self.tag or 'value'} argument, got {_show(args)}")
        value = args[0]
        if self.kind == "switch":
            if not _is_number(value):
                raise ValueError(f"takes 0 or 1, got {_show(args)}")
            return bool(value)
        if self.kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"takes a string, got {_show(args)}")
            if self.choices and value not in self.choices:
                raise ValueError(f"takes one of {', '.join(self.choices)}, got {value!r}")
            return value
        if not _is_number(value) or isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"takes a number, got {_show(args)}")
        if self.kind == "int":
            if value != int(value):
                raise ValueError(f"takes a whole number, got {value!r}")
            value = int(value)
        if not self.low <= value <= self.high:
            raise ValueError(f"takes {self.low:g}..{self.high:g}, got {value!r}")
        return value * self.scale if self.kind == "float" else value


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float))


def _show(args: Sequence[Any]) -> str:
    return repr(list(args))[:80]


def _preset_number(kind: str, section: str, key: str, scale: float = 1.0) -> Setting:
    """A numeric setting with the range its preset key allows (one set of bounds everywhere)."""
    low, high = presets.setting_range(section, key)
    return Setting(kind, low, high, scale=scale)


SETTINGS: Mapping[str, Setting] = {
    "temperature": _preset_number("float", "sampling", "temperature"),
    "top_p": _preset_number("float", "sampling", "top_p"),
    "length": _preset_number("int", "response", "length"),
    "gap": _preset_number("float", "listen", "gap_ms", scale=0.001),  # ms over OSC, seconds in the session
    "mode": Setting("str", choices=presets.MODES),
    "preset": Setting("str"),
    "panic": Setting("trigger"),
    "mute": Setting("switch"),
    "end_call": Setting("trigger"),
}
"""``/livegen/NAME`` -> what it takes.  A name is the session's control name (``Session.command``)."""


def _address(host: str, port: int, passive: bool) -> tuple[int, tuple]:
    """(family, sockaddr) for host and port, or OscError naming them."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE if passive else 0)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise OscError(f"OSC: cannot resolve host {host!r} ({exc})") from exc
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


class Malformed(ValueError):
    """A datagram that is not exactly one OSC message or bundle of the kinds livegen takes."""


def split_packet(datagram: bytes, depth: int = 0) -> list[bytes]:
    """The message datagrams in an OSC packet (a message, or a bundle of them, nested).

    Stricter than python-osc on purpose: each message must be exactly as long as its type tags
    say (python-osc pads a missing float with zeros, which would turn a truncated packet into
    a temperature of 0), and carry at most one argument of the types the settings take.
    """
    if datagram.startswith(b"#bundle\x00"):
        if depth >= MAX_BUNDLE_DEPTH:
            raise Malformed("bundles nested too deep")
        if len(datagram) < 16 or len(datagram) % 4:
            raise Malformed(f"bundle of {len(datagram)} bytes")
        index, messages = 16, []  # "#bundle\0" and the 8-byte time tag (applied at once)
        while index < len(datagram):
            if index + 4 > len(datagram):
                raise Malformed("truncated bundle element size")
            size = int.from_bytes(datagram[index:index + 4], "big")
            element = datagram[index + 4:index + 4 + size]
            if size == 0 or size % 4 or len(element) != size:
                raise Malformed(f"bundle element of {size} bytes")
            messages += split_packet(element, depth + 1)
            index += 4 + size
        return messages
    _check_message(datagram)
    return [datagram]


def _check_message(datagram: bytes) -> None:
    if not datagram.startswith(b"/") or len(datagram) % 4:
        raise Malformed(f"not an OSC message ({len(datagram)} bytes)")
    try:
        _, index = osc_types.get_string(datagram, 0)
        if index == len(datagram):
            return  # no type tags: no arguments
        tags, index = osc_types.get_string(datagram, index)
        if not tags.startswith(",") or len(tags) > 2 or any(tag not in ARG_SIZES and tag != "s" for tag in tags[1:]):
            raise Malformed(f"type tags {tags[:16]!r}: livegen takes at most one i, f, d, h, s, T or F")
        for tag in tags[1:]:
            index = osc_types.get_string(datagram, index)[1] if tag == "s" else index + ARG_SIZES[tag]
    except osc_types.ParseError as exc:
        raise Malformed(str(exc)) from None
    if index != len(datagram):
        raise Malformed(f"{len(datagram)} bytes where the type tags say {index}")


def _is_power_of_ten(n: int) -> bool:
    while n >= 10 and n % 10 == 0:
        n //= 10
    return n == 1


class OscReceiver:
    """Listens for ``/livegen/...`` on one UDP socket, on a thread of its own.

    The socket is bound here (an error names the host and port); ``start()`` starts the thread,
    ``stop()`` joins it and closes the socket.  ``counts`` says what arrived and what was ignored.
    """

    def __init__(self, port: int, on_setting: Callable[[str, object], None], host: str = LOOPBACK,
                 settings: Mapping[str, Setting] = SETTINGS, log: Callable[[dict], None] | None = None) -> None:
        self._on_setting = on_setting
        self._settings = settings
        self._log = log or (lambda record: None)
        self.counts = {"packets": 0, "applied": 0, "malformed": 0, "unknown": 0, "rejected": 0}
        family, sockaddr = _address(host, port, passive=True)
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._socket.bind(sockaddr)
        except OSError as exc:
            self._socket.close()
            raise OscError(f"OSC: cannot listen on {host}:{port} ({exc.strerror or exc})") from exc
        self._socket.settimeout(POLL_S)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound (port 0 asks for any free one)."""
        host, port = self._socket.getsockname()[:2]
        return host, port

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("OSC receiver already started")
        self._thread = threading.Thread(target=self._run, name="livegen-osc-in", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._socket.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                datagram = self._socket.recv(MAX_DATAGRAM)
            except socket.timeout:
                continue
            except OSError as exc:  # closed under us, or a transient error: never end the daemon
                if self._stop.is_set():
                    return
                self._ignored("malformed", f"receive: {exc}")
                continue
            self.handle(datagram)

    def handle(self, datagram: bytes) -> None:
        """Apply every message of one datagram (a message or a bundle, applied at once)."""
        self.counts["packets"] += 1
        try:
            messages = [OscMessage(each) for each in split_packet(datagram)]
        except Exception as exc:  # Malformed, or python-osc's own errors: none may escape
            self._ignored("malformed", f"{len(datagram)} bytes: {exc}"[:200])
            return
        for message in messages:
            address, args = message.address, list(message.params)
            name = address[len(PREFIX):] if address.startswith(PREFIX) else None
            setting = self._settings.get(name) if name else None
            if setting is None:
                self._ignored("unknown", address[:80])
                continue
            try:
                value = setting.parse(args)
                if value is not None:
                    self._on_setting(name, value)
                    self.counts["applied"] += 1
            except (ValueError, LivegenError) as exc:
                self._ignored("rejected", f"{address}: {exc}")

    def _ignored(self, reason: str, detail: str) -> None:
        self.counts[reason] += 1
        count = self.counts[reason]
        if _is_power_of_ten(count):
            self._log({"event": "osc_ignored", "t": time.monotonic(), "reason": reason, "count": count,
                       "detail": detail})


class OscSender:
    """Sends the session's state, notes and phrase ends to one ``host:port`` without blocking.

    ``observe(record)`` (and ``send``) only put on a bounded queue; a full queue drops and counts
    (``dropped``).  ``start()`` starts the sender thread; ``stop()`` sends what is queued (up to
    ``timeout``), joins it and closes the socket.
    """

    def __init__(self, host: str, port: int, capacity: int = 4096, log: Callable[[dict], None] | None = None) -> None:
        family, sockaddr = _address(host, port, passive=False)
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._socket.connect(sockaddr)  # picks the local address; replies from others are refused
        except OSError as exc:
            self._socket.close()
            raise OscError(f"OSC: cannot send to {host}:{port} ({exc.strerror or exc})") from exc
        self._queue: queue.Queue[tuple[str, tuple]] = queue.Queue(maxsize=capacity)
        self._log = log or (lambda record: None)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.dropped = 0
        self.failed = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("OSC sender already started")
        self._thread = threading.Thread(target=self._run, name="livegen-osc-out", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._socket.close()

    def send(self, address: str, *args: str | int) -> bool:
        """Queue one message; False (and counted) if the queue is full."""
        try:
            self._queue.put_nowait((address, args))
            return True
        except queue.Full:
            self.dropped += 1
            return False

    def observe(self, record: dict) -> None:
        """A session record -> the OSC message it means, if any (on the caller's thread: cheap)."""
        event = record.get("event")
        if event in ("note_on", "note_off"):
            on = event == "note_on"
            self.send(PREFIX + "note", record.get("who", "livegen"), "on" if on else "off",
                      int(record["channel"]) + 1, int(record["pitch"]), int(record.get("velocity", 0)) if on else 0)
        elif event == "state":
            self.send(PREFIX + "state", str(record["state"]))
        elif event == "trigger" and record.get("notes"):
            self.send(PREFIX + "phrase", int(record["notes"]))

    def _run(self) -> None:
        while True:
            try:
                address, args = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            builder = OscMessageBuilder(address)
            for arg in args:
                builder.add_arg(arg, "s" if isinstance(arg, str) else "i")
            try:
                self._socket.send(builder.build().dgram)
                self.sent += 1
            except OSError as exc:  # nobody listening (ECONNREFUSED), network down: count, go on
                self.failed += 1
                if _is_power_of_ten(self.failed):
                    self._log({"event": "osc_send_failed", "t": time.monotonic(), "count": self.failed,
                               "message": str(exc)})
