"""Hot-plug: follow the ports livegen connected to by name, and the JACK server under them.

``livegen run --input PATTERN`` / ``--output PATTERN`` connect livegen's own port to another
program's port or a device's.  When that port goes away (a keyboard unplugged, a synth quit)
livegen keeps running; when a port with the same name comes back, it connects again.
``PortWatcher.poll()`` does that from the daemon's watch loop, every ~0.2 s, on its thread:

- It lists ports with each port's own rtmidi object, which is no server round trip (see
  ``listing.find_target``); only the rare reconnect makes round trips, with the input's poll
  thread held off around them (``InputPort.paused``).  The same code serves ALSA
  (names compared without ALSA's ``client:port`` numbers, which a replugged device may change).
- Input lost: the engine gets pedal-up and All Notes Off on the channels heard, so a key held
  when the cable went cannot hold the phrase open.  Output lost: what was sounding there is
  owed a note-off, sent on reconnection along with CC 123, so nothing hangs on the synth;
  meanwhile sends go on to livegen's own port, unheard, without errors.
- Reconnecting reopens livegen's port (rtmidi has no bare "connect"); with JACK that drops the
  connections others made to it by hand.
- A port that goes and comes back between two polls is not noticed (its connection is then
  lost without a word): rtmidi cannot show connections, only names.
- The JACK server stopping cannot be seen through rtmidi at all (midi_out.py docstring), so
  ``JackServerWatch`` checks that the server still listens on its socket; when it stops,
  ``poll()`` raises ``MidiServerLostError`` (exit code 3): nothing can be reconnected then, and
  waiting would look like a hang.

Virtual ports (no pattern) are livegen's own: nothing to follow.  A peer that was connected to
one and disappears is that peer's business.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

from livegen.io.apis import MidiBackendError
from livegen.io.midi_in import InputPort
from livegen.io.midi_out import OutputPort
from livegen.io.ports import PortPair

POLL_INTERVAL_S = 0.2
"""How often the daemon polls; with the input pause (<= 0.2 s) a port is back within ~0.5 s."""

RETRY_AFTER_S = 1.0
"""After a failed reconnect (the port came back and went again...), wait this long."""

EXIT_SERVER_LOST = 3

PROC_NET_UNIX = "/proc/net/unix"
_SO_ACCEPTCON = 0x10000  # /proc/net/unix flag of a listening socket


class MidiServerLostError(MidiBackendError):
    """The MIDI server (jackd) stopped while livegen ran: every port is gone for good."""

    exit_code = EXIT_SERVER_LOST

    def __init__(self, message: str, event: dict[str, Any]) -> None:
        super().__init__(message)
        self.event = event


# --- the JACK server ----------------------------------------------------------------------------


def jack_server_name() -> str:
    """The server libjack connects to: $JACK_DEFAULT_SERVER, else ``default``."""
    return os.environ.get("JACK_DEFAULT_SERVER") or "default"


def listening_sockets(text: str) -> dict[str, set[int]]:
    """``{path: {inode, ...}}`` of the listening Unix sockets in ``/proc/net/unix`` text."""
    found: dict[str, set[int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue  # an unnamed socket
        try:
            flags, inode = int(fields[3], 16), int(fields[6])
        except ValueError:
            continue
        if flags & _SO_ACCEPTCON:
            found.setdefault(fields[7], set()).add(inode)
    return found


def jack_server_sockets(server: str, text: str) -> set[int]:
    """Inodes of the sockets where a JACK server named ``server`` listens for clients.

    jackd 1.9 (JACK2) listens on ``<tmpdir>/jack_<server>_<uid>_0``; JACK1 on
    ``<tmpdir>/jack-<uid>/<server>/jack_0``.
    """
    jack2 = re.compile(rf"/jack_{re.escape(server)}_\d+_0$")
    jack1 = f"/{server}/jack_0"
    return {inode for path, inodes in listening_sockets(text).items()
            if jack2.search(path) or path.endswith(jack1) for inode in inodes}


class JackServerWatch:
    """Whether the JACK server that was running when this was made still runs.

    Its listening socket is looked up in /proc/net/unix (Linux) by inode, so a server that died
    is noticed even when its socket file stays behind (SIGKILL), and one restarted under the
    same name counts as stopped (our clients died with the old one).  Where that cannot be
    read or the socket is not found (another OS, PipeWire's JACK), ``available`` is False and
    ``alive()`` always says True: no detection rather than a false alarm.
    """

    def __init__(self, server: str | None = None, read: Callable[[], str] | None = None) -> None:
        self.server = server or jack_server_name()
        self._read = read or _read_proc_net_unix
        self._inodes = self._current()

    def _current(self) -> set[int]:
        try:
            return jack_server_sockets(self.server, self._read())
        except OSError:
            return set()

    @property
    def available(self) -> bool:
        return bool(self._inodes)

    def alive(self) -> bool:
        return not self._inodes or bool(self._inodes & self._current())


def _read_proc_net_unix() -> str:
    with open(PROC_NET_UNIX) as file:
        return file.read()


# --- ports --------------------------------------------------------------------------------------


@dataclass
class _Followed:
    port: InputPort | OutputPort
    lost_at: float | None = None  # clock time the loss was noticed
    retry_at: float = float("-inf")  # after a failed reconnect, not before this


class PortWatcher:
    """Poll the ports opened by pattern; mark them lost, reconnect them, say so in events.

    ``poll()`` returns the events (``port_lost``, ``port_reconnected``, ``error`` for a failed
    reconnect, retried on the next poll) for the daemon to log; it raises MidiServerLostError
    once the JACK server is gone.  Call it from one thread, the one that closes the ports.
    """

    def __init__(self, ports: PortPair, server: JackServerWatch | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._input = ports.input
        self._followed = [_Followed(port) for port in ports if not port.virtual]
        if server is None and ports.input.api == "jack":
            server = JackServerWatch()
        self._server = server
        self._clock = clock

    @property
    def following(self) -> list[str]:
        """Names of the ports followed (the targets of --input/--output)."""
        return [each.port.target or "" for each in self._followed]

    @property
    def server_watched(self) -> bool:
        return self._server is not None and self._server.available

    def poll(self) -> list[dict[str, Any]]:
        """Check the server, then each followed port: lost ones are marked, returned ones are
        reconnected (all inside one input pause); returns the events, oldest first."""
        if self._server is not None and not self._server.alive():
            now = self._clock()
            event = {"event": "server_lost", "t": now, "server": self._server.server}
            raise MidiServerLostError(
                f"JACK server {self._server.server!r} stopped; livegen cannot go on without it "
                f"(start jackd again, then livegen)", event)
        events = []
        back = []
        for each in self._followed:
            present = each.port.target_present()
            if present is None:  # closed
                continue
            if each.lost_at is None and not present:
                events.append(self._lose(each))
            elif each.lost_at is not None and present and self._clock() >= each.retry_at:
                back.append(each)
        if back:
            seen = self._clock()
            with self._input.paused():  # one pause for every reopening
                events += [event for each in back if (event := self._reconnect(each, seen)) is not None]
        return events

    def _lose(self, each: _Followed) -> dict[str, Any]:
        port = each.port
        each.lost_at = self._clock()
        port.mark_lost(each.lost_at)  # input: release what is held; output: owe note-offs
        return {"event": "port_lost", "t": each.lost_at, "kind": port.kind, "port": port.target}

    def _reconnect(self, each: _Followed, seen: float) -> dict[str, Any] | None:
        """``took_s`` in the event: from noticing the port back to connected (the input pause
        and the JACK round trips), to tell a slow reconnect from a late poll."""
        port = each.port
        try:
            done = port.reconnect()
        except MidiBackendError as exc:
            each.retry_at = self._clock() + RETRY_AFTER_S
            return {"event": "error", "t": self._clock(), "message": f"reconnect: {exc}"}
        if not done:
            return None
        now = self._clock()
        lost_for, each.lost_at = now - each.lost_at, None
        return {"event": "port_reconnected", "t": now, "kind": port.kind, "port": port.target,
                "lost_s": round(lost_for, 3), "took_s": round(now - seen, 3)}


def describe(event: dict[str, Any]) -> str | None:
    """The stderr line for a hot-plug event, or None for other events."""
    kind, port = event.get("kind"), event.get("port")
    if event["event"] == "port_lost":
        return f"livegen: MIDI {kind} {port!r} disappeared; reconnecting when it is back"
    if event["event"] == "port_reconnected":
        return f"livegen: MIDI {kind} {port!r} is back; reconnected (gone {event['lost_s']:.1f} s)"
    return None


__all__ = [
    "EXIT_SERVER_LOST",
    "JackServerWatch",
    "MidiServerLostError",
    "POLL_INTERVAL_S",
    "PortWatcher",
    "describe",
    "jack_server_name",
]
