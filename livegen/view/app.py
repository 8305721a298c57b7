"""The live view's process: a Textual app drawing the snapshots livegen sends (see link.py).

    state · preset · phrases              <- header: the state in its colour
    piano roll (player cyan, livegen magenta), the last phrase and answer
    settings with their CC numbers | ports, latency, timing, OSC | events

Keys: p panic, m mute, up/down temperature ±0.1, left/right previous/next preset, e end call,
q quit (livegen quits with it).  A key is sent to the daemon as ``{"command", "args"}``, the
arguments OSC would carry; the daemon checks them with the same table.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
from typing import Sequence

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Static

from livegen.view.roll import COLOURS, Roll, pitch_name

STATE_STYLES = {"idle": "dim", "listening": "bold green", "thinking": "bold yellow", "playing": "bold magenta"}
EVENTS_SHOWN = 200


class ViewApp(App):
    """Draws snapshots (``show``); keys go to ``send`` (a callable taking one dict), if any."""

    CSS = """
    #header { height: 1; background: $panel; padding: 0 1; }
    #roll { height: 1fr; min-height: 8; border: round $primary; }
    #panels { height: 12; }
    #settings { width: 34; border: round $secondary; }
    #info { width: 1fr; border: round $secondary; }
    #events { height: 10; border: round $secondary; }
    """
    BINDINGS = [
        Binding("p", "panic", "panic"),
        Binding("m", "mute", "mute"),
        Binding("up", "temperature(0.1)", "warmer"),
        Binding("down", "temperature(-0.1)", "cooler"),
        Binding("left", "preset(-1)", "prev preset"),
        Binding("right", "preset(1)", "next preset"),
        Binding("e", "end_call", "end call"),
        Binding("q", "quit_livegen", "quit"),
    ]

    def __init__(self, send=None, read=None) -> None:
        """``send(dict)`` takes key commands; ``read(app)`` runs on a thread from mount on."""
        super().__init__()
        self._send = send
        self._read = read
        self.roll = Roll()
        self.snapshot: dict = {}
        self.events: list[str] = []

    def compose(self) -> ComposeResult:
        yield Static("livegen: waiting for the daemon", id="header")
        yield Static("", id="roll")
        with Horizontal(id="panels"):
            yield Static("", id="settings")
            yield Static("", id="info")
        yield Static("", id="events")
        yield Footer()

    def on_mount(self) -> None:
        if self._read is not None:
            threading.Thread(target=self._read, args=(self,), name="view-reader", daemon=True).start()

    # -- drawing ---------------------------------------------------------------------------------

    def show(self, snapshot: dict) -> None:
        """Take one snapshot from the daemon and redraw what changed (the roll while notes scroll)."""
        previous, self.snapshot = self.snapshot, snapshot
        for t, who, on, channel, pitch, velocity in snapshot.get("notes", []):
            self.roll.add(t, who, on, channel, pitch, velocity)
        self.events = (self.events + [text for _, text in snapshot.get("events", [])])[-EVENTS_SHOWN:]
        still = {k: v for k, v in snapshot.items() if k != "t"} == {k: v for k, v in previous.items() if k != "t"}
        if not (still and not self.roll.spans(snapshot.get("t", 0.0))):  # nothing new and no note in view: keep the picture
            self._draw()

    def _draw(self) -> None:
        s = self.snapshot
        state = s.get("state", "?")
        muted = dict((name, value) for name, value, _ in s.get("settings", [])).get("mute") == "on"
        header = Text.assemble(("livegen ", "bold"), (f" {state.upper()} ", STATE_STYLES.get(state, "bold")),
                               f"  preset {s.get('preset', '?')}  phrases {s.get('phrases', 0)}",
                               ("  MUTED" if muted else "", "bold red"))
        self.query_one("#header", Static).update(header)
        roll = self.query_one("#roll", Static)
        width, height = roll.content_size
        picture = self.roll.render(s.get("t", 0.0), width or 80, max(1, (height or 12) - 1))
        legend = Text.assemble("\n", ("█ player ", COLOURS["player"]), ("█ livegen ", COLOURS["livegen"]),
                               f" last phrase: {' '.join(map(pitch_name, self.roll.last['player'])) or '-'}"
                               f"  answer: {' '.join(map(pitch_name, self.roll.last['livegen'])) or '-'}")
        roll.update(picture + legend)
        settings = Text()
        for name, value, cc in s.get("settings", []):
            settings.append(f"{name:<12}{value!s:<14}", style="bold" if value != "" else "")
            settings.append(f"CC {cc}\n" if cc is not None else "-\n", style="dim")
        self.query_one("#settings", Static).update(settings)
        self.query_one("#info", Static).update(self._info(s))
        self.query_one("#events", Static).update("\n".join(self.events[-8:]))

    @staticmethod
    def _info(s: dict) -> Text:
        ports = s.get("ports", {})
        latency = s.get("latency_ms")
        timing = s.get("timing_ms")
        lines = [f"in  {ports.get('input', '-')}", f"out {ports.get('output', '-')}",
                 "latency " + (f"{latency:.2f} ms (first note after the gap's end)" if latency is not None else "-"),
                 "timing  " + (f"median {timing['median']:.2f} ms, max {timing['max']:.2f} ms (last {timing['n']} notes)"
                               if timing else "-")]
        for side, counts in s.get("osc", {}).items():
            lines.append(f"OSC {side}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        presets = s.get("presets", [])
        if presets:
            lines.append("presets: " + " ".join(f"[{p}]" if p == s.get("preset") else p for p in presets))
        return Text("\n".join(lines))

    # -- keys ------------------------------------------------------------------------------------

    def _command(self, name: str, *args) -> None:
        if self._send is not None:
            self._send({"command": name, "args": list(args)})

    def action_panic(self) -> None:
        self._command("panic")

    def action_mute(self) -> None:
        settings = dict((name, value) for name, value, _ in self.snapshot.get("settings", []))
        self._command("mute", 0 if settings.get("mute") == "on" else 1)

    def action_temperature(self, delta: float) -> None:
        settings = dict((name, value) for name, value, _ in self.snapshot.get("settings", []))
        if "temperature" in settings:
            self._command("temperature", round(min(10.0, max(0.0, settings["temperature"] + delta)), 3))

    def action_preset(self, direction: int) -> None:
        names = self.snapshot.get("presets", [])
        if names:
            current = self.snapshot.get("preset")
            index = names.index(current) + direction if current in names else (0 if direction > 0 else -1)
            self._command("preset", names[index % len(names)])

    def action_end_call(self) -> None:
        self._command("end_call")

    def action_quit_livegen(self) -> None:
        self._command("quit")
        self.exit()


class SocketClient:
    """The view's end of the socket pair: snapshots in (a thread), commands out."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: dict) -> None:
        try:
            self.sock.sendall((json.dumps(message) + "\n").encode())
        except OSError:  # livegen is going away; it will close us
            pass

    def read(self, app: ViewApp) -> None:
        """Until the daemon closes the socket: each snapshot line -> app.show (latest only)."""
        buffer = b""
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except OSError:
                data = b""
            if not data:
                try:
                    app.call_from_thread(app.exit)
                except RuntimeError:  # the app has already ended
                    pass
                return
            *lines, buffer = (buffer + data).split(b"\n")
            if lines:
                notes, events, latest = [], [], None
                for line in lines:  # frames that queued up: keep every note and event, draw once
                    latest = json.loads(line)
                    notes += latest.get("notes", [])
                    events += latest.get("events", [])
                latest.update(notes=notes, events=events)
                try:
                    app.call_from_thread(app.show, latest)
                except RuntimeError:
                    return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m livegen.view", description="livegen's live view (started by `livegen run --view`)")
    parser.add_argument("--fd", type=int, required=True, help="the socket livegen passed")
    args = parser.parse_args(argv)
    try:
        os.nice(10)  # drawing yields the CPU to livegen's engine and to JACK when they compete
    except OSError:
        pass
    client = SocketClient(socket.socket(fileno=args.fd))
    try:
        ViewApp(send=client.send, read=client.read).run()
    finally:
        client.sock.close()
    return 0
