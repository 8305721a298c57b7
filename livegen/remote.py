"""Remote control and monitoring of a running session: OSC in, OSC out, the live view.

Each part runs beside the session on a thread (the view: in a process) of its own and reaches
it through two doors only: ``Session.command`` (a change, applied by the engine thread exactly
as a knob's) and ``Session.observers`` (records, which each part only queues).  So none of them
can slow the engine or the scheduler.  ``start()`` starts them, ``stop()`` joins them.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable

from livegen import presets
from livegen.errors import LivegenError, PresetError
from livegen.io.osc import SETTINGS, OscReceiver, OscSender


class Remote:
    """The remote parts asked for by ``livegen run`` flags, around one session."""

    def __init__(self, session, load_preset: Callable[[str], object], log: Callable[[dict], None],
                 say: Callable[[str], None]) -> None:
        self.session = session
        self._load_preset = load_preset
        self._log = log
        self._say = say
        self.receiver: OscReceiver | None = None
        self.sender: OscSender | None = None
        self.view = None  # livegen.view.link.ViewLink
        self._started: list[Callable[[], None]] = []  # stop() of what started, in start order

    # -- the parts ------------------------------------------------------------------------------

    def listen_osc(self, port: int, host: str) -> None:
        self.receiver = OscReceiver(port, self.apply, host=host, log=self._log)
        self.session.enable_commands()

    def send_osc(self, host: str, port: int) -> None:
        self.sender = OscSender(host, port, log=self._log)
        self.session.observers.append(self.sender.observe)

    def show_view(self, describe_ports: dict, tty: str | None, on_quit: Callable[[], None]) -> None:
        from livegen.view.link import ViewFeed, ViewLink

        feed = ViewFeed(self.session, describe_ports, preset_names(self.session), stats=self.stats)
        self.session.observers.append(feed.observe)
        self.session.enable_commands()
        self.view = ViewLink(feed, self.apply_args, on_quit, tty=tty)

    # -- changes from OSC and the view ----------------------------------------------------------

    def apply(self, name: str, value: object) -> None:
        """A parsed setting -> the session (presets are loaded here, off the engine thread)."""
        if name == "preset":
            if not isinstance(value, str) or presets.is_path(value):
                raise PresetError(f"preset {value!r}: OSC and the view switch presets by name only")
            value = self._load_preset(value)
        self.session.command(name, value)

    def apply_args(self, name: str, args: list) -> None:
        """Raw arguments (the view sends them as OSC would) -> checked by SETTINGS -> apply."""
        setting = SETTINGS.get(name)
        if setting is None:
            raise ValueError(f"no setting {name!r}")
        value = setting.parse(args)
        if value is not None:
            self.apply(name, value)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """OSC in and out (the view starts with ``start_view``, once the ready line is out)."""
        if self.sender is not None:
            self.sender.start()
            self._started.append(self.sender.stop)
        if self.receiver is not None:
            self.receiver.start()
            self._started.append(self.receiver.stop)
            host, port = self.receiver.address
            self._log({"event": "osc_listening", "t": time.monotonic(), "host": host, "port": port})
            if host not in ("127.0.0.1", "::1"):
                self._say(f"warning: OSC listens on {host}:{port}: anyone who can reach this machine can control livegen")

    def start_view(self) -> None:
        if self.view is not None:
            self.view.start()
            self._started.append(self.view.stop)

    def stop(self) -> None:
        """Stop what started, the view first (it gives the terminal back), then OSC in, then out
        (so the last notes and states still go out)."""
        for stop in reversed(self._started):
            try:
                stop()
            except Exception as exc:
                self._log({"event": "error", "message": f"remote stop: {type(exc).__name__}: {exc}"})
        self._started.clear()

    def stats(self) -> dict:
        out = {}
        if self.receiver is not None:
            out["in"] = dict(self.receiver.counts)
        if self.sender is not None:
            out["out"] = {"sent": self.sender.sent, "dropped": self.sender.dropped, "failed": self.sender.failed}
        return out


def preset_names(session) -> list[str]:
    """What the view's preset keys step through: the program-change list, else every preset found."""
    names = [config.name for config in getattr(session, "switch", [])]
    return names or sorted(presets.available())


def open_remote(args, session, load_preset: Callable[[str], object], log: Callable[[dict], None],
                say: Callable[[str], None], ports: dict[str, str], stop: threading.Event) -> Remote | None:
    """The Remote for ``livegen run``'s flags, or None when none was given.  Quitting the view
    sets ``stop`` (livegen quits with it)."""
    if args.osc_port is None and args.osc_send is None and not args.view:
        return None
    remote = Remote(session, load_preset, log, say)
    if args.osc_port is not None:
        remote.listen_osc(args.osc_port, args.osc_host)
    if args.osc_send is not None:
        remote.send_osc(*args.osc_send)
    if args.view:
        if args.view_tty is None and not sys.stdout.isatty():
            raise ViewError("--view needs a terminal on stdout (or --view-tty DEVICE)")
        remote.show_view(ports, args.view_tty, stop.set)
    return remote


class ViewError(LivegenError, OSError):
    """The live view cannot start (no terminal)."""
