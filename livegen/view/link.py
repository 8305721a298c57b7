"""The daemon's side of the live view: what it shows (ViewFeed), and the process it runs in (ViewLink).

``ViewFeed.observe`` is a Session observer, called on the engine, scheduler and worker threads:
it only appends to bounded deques.  ``ViewLink`` starts the view process (``python -m
livegen.view``) with one end of a Unix socket pair, and on a thread of its own sends it a
snapshot every FRAME_S (new notes and events, settings, state) and reads its keys.  The socket
is non-blocking: a view that falls behind misses frames (``skipped``), it never slows livegen.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Callable

FRAME_S = 0.1  # 10 pictures a second: the roll moves one column per 70 ms; cheaper for both sides
CONTROLS = ("temperature", "top_p", "length", "gap", "mode", "panic", "mute", "end_call")

Record = dict


def describe(record: Record) -> str | None:
    """One line for the view's event list, or None for records it does not list."""
    event = record.get("event")
    if event == "trigger":
        return f"phrase end ({record.get('reason', 'gap')}): {record.get('notes')} notes" + \
            (" (muted)" if record.get("muted") else "")
    if event == "respond":
        return (f"answer: {record.get('length')} notes, T {record.get('temperature')}, top-p {record.get('top_p')}, "
                f"{record.get('mode')}, preset {record.get('preset')}")
    if event == "control":
        return f"control: {record.get('name')} = {record.get('value')}"
    if event == "osc_ignored":
        return f"OSC ignored ({record.get('reason')}, {record.get('count')} so far): {record.get('detail')}"
    if event in ("error", "osc_send_failed"):
        return f"{event}: {record.get('message')}"
    if event in ("note_on", "note_off", "state", "ready"):
        return None
    rest = ", ".join(f"{k} {v}" for k, v in record.items() if k not in ("event", "t"))
    return f"{event}: {rest}" if rest else str(event)


class ViewFeed:
    """What the view shows, gathered from the session's records and read in snapshots."""

    def __init__(self, session, ports: dict[str, str], presets: list[str],
                 stats: Callable[[], dict] = dict, clock: Callable[[], float] = time.monotonic) -> None:
        self.session = session
        self.ports = ports
        self.presets = presets
        self._stats = stats
        self._clock = clock
        self._notes: deque[list] = deque(maxlen=4096)  # [t, who, on, channel, pitch, velocity]
        self._events: deque[list] = deque(maxlen=256)  # [t, text]
        self._lateness: deque[float] = deque(maxlen=64)  # sent - intended of livegen's last note-ons
        self._answer_start: float | None = None
        self.state = "idle"
        self.latency_ms: float | None = None

    def observe(self, record: Record) -> None:
        """Session observer: appends only (any thread)."""
        event = record.get("event")
        if event in ("note_on", "note_off"):
            on = event == "note_on"
            who = record.get("who", "livegen")
            t = record.get("t", record.get("sent", 0.0))
            self._notes.append([t, who, on, record.get("channel", 0), record.get("pitch", 0), record.get("velocity", 0)])
            if on and who == "livegen" and "sent" in record:
                self._lateness.append(record["sent"] - record["intended"])
                start = self._answer_start
                if start is not None and record["intended"] >= start - 1e-6:
                    self.latency_ms = (record["sent"] - start) * 1000.0
                    self._answer_start = None
            return
        if event == "state":
            self.state = record["state"]
            return
        if event == "respond":
            self._answer_start = record.get("start_at")
        text = describe(record)
        if text is not None:
            self._events.append([record.get("t", self._clock()), text])

    def say(self, text: str) -> None:
        self._events.append([self._clock(), text])

    @staticmethod
    def _take(items: deque) -> list:
        out = []
        while True:
            try:
                out.append(items.popleft())
            except IndexError:
                return out

    def snapshot(self) -> dict:
        """Everything the view draws; notes and events are those new since the last snapshot."""
        session = self.session
        config = session.config
        controls = config.controls
        values = {"temperature": config.sampling.temperature, "top_p": config.sampling.top_p, "length": config.length,
                  "gap": round(session.phrase.gap_s * 1000.0), "mode": config.mode, "panic": "",
                  "mute": "on" if session.muted else "off", "end_call": ""}
        lateness = list(self._lateness)
        return {
            "t": self._clock(),
            "state": self.state,
            "preset": config.name,
            "settings": [[name, values[name], getattr(controls, name, None)] for name in CONTROLS],
            "ports": self.ports,
            "presets": self.presets,
            "phrases": session.phrases,
            "latency_ms": self.latency_ms,
            "timing_ms": None if not lateness else
            {"median": statistics.median(lateness) * 1000.0, "max": max(lateness) * 1000.0, "n": len(lateness)},
            "osc": self._stats(),
            "notes": self._take(self._notes),
            "events": self._take(self._events),
        }


class ViewLink:
    """The view process and the thread that feeds it.  ``start()``/``stop()`` (joined, the
    process waited for).  When the view quits (its ``q`` key, or it died), ``on_quit`` runs."""

    def __init__(self, feed: ViewFeed, on_command: Callable[[str, list], None], on_quit: Callable[[], None],
                 tty: str | None = None) -> None:
        self.feed = feed
        self._on_command = on_command
        self._on_quit = on_quit
        self._tty = tty
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.process: subprocess.Popen | None = None
        self.frames = 0
        self.skipped = 0

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("view already started")
        ours, theirs = socket.socketpair()
        # Textual draws on its stderr: give it the terminal (stdout, or --view-tty) on 1 and 2.
        terminal = open(self._tty, "r+b", buffering=0) if self._tty else sys.stdout
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "livegen.view", "--fd", str(theirs.fileno())], pass_fds=(theirs.fileno(),),
                stdin=terminal if self._tty else None, stdout=terminal, stderr=terminal,
                start_new_session=self._tty is not None,
                env={k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")})  # the terminal's own size
        finally:
            theirs.close()
            if self._tty:
                terminal.close()
        ours.setblocking(False)
        self._socket = ours
        self._capture_stderr()
        self._thread = threading.Thread(target=self._run, name="livegen-view", daemon=True)
        self._thread.start()

    def _capture_stderr(self) -> None:
        """While the view draws, what livegen (or a library) writes on stderr goes to its event
        list instead of through the picture."""
        sys.stderr.flush()
        self._saved_stderr = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._stderr_reader = threading.Thread(target=self._read_stderr, args=(read,), name="livegen-view-stderr",
                                               daemon=True)
        self._stderr_reader.start()

    def _read_stderr(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as lines:
            for line in lines:
                text = line.decode("utf-8", "replace").strip()
                if text:
                    self.feed.say(text)

    def _release_stderr(self) -> None:
        if getattr(self, "_saved_stderr", None) is not None:
            sys.stderr.flush()
            os.dup2(self._saved_stderr, 2)  # the pipe's last writer closes: the reader ends
            os.close(self._saved_stderr)
            self._saved_stderr = None
            self._stderr_reader.join(1.0)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()  # the view sees the end of its input and quits
        if self.process is not None:
            try:
                self.process.wait(timeout)  # (the terminal is the view's until it has ended)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(1.0)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        self._release_stderr()

    def _run(self) -> None:
        sock, pending, received = self._socket, b"", b""
        while not self._stop.wait(FRAME_S):
            if self.process.poll() is not None:
                self._on_quit()
                return
            try:
                if not pending:
                    pending = (json.dumps(self.feed.snapshot(), separators=(",", ":")) + "\n").encode()
                    self.frames += 1
                else:
                    self.skipped += 1
                pending = pending[sock.send(pending):]
            except BlockingIOError:
                pass
            except OSError:  # the view went away: its process ends, noticed above
                pending = b""
            try:
                data = sock.recv(65536)
                if not data:
                    self._on_quit()
                    return
                received += data
            except BlockingIOError:
                pass
            except OSError:
                continue
            *lines, received = received.split(b"\n")
            for line in lines:
                self._command(line)

    def _command(self, line: bytes) -> None:
        try:
            message = json.loads(line)
            name, args = message["command"], list(message.get("args", []))
            if name == "quit":
                self._on_quit()
                return
            self._on_command(name, args)
        except Exception as exc:  # a key the daemon refuses: say so in the view, go on
            self.feed.say(f"key refused: {type(exc).__name__}: {exc}")
