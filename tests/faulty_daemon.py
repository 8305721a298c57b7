"""`livegen run` with one injected fault, for tests/test_stuck_notes.py.

    python tests/faulty_daemon.py --fault KIND:N run --model ... (any `livegen run` flags)

The real daemon in its own process, with one method made to raise once, so a test sees what the
daemon does about a failure it cannot provoke from outside.  Nothing in livegen is changed for
it: this patches classes, then calls ``livegen.cli.main``.

Faults (N counts from 1):

- ``sample:N``: the Nth ``NoteStream.sample`` call made on the model worker thread waits until
  an answer note is sounding, then raises RuntimeError: the model failing mid-answer.
- ``note_on:N`` / ``note_off:N``: the Nth note-on / note-off sent to the MIDI output port
  raises MidiBackendError (the message is not sent): the port failing mid-answer.
- ``port_close_stall:S``: closing the MIDI ports at shutdown takes S seconds more, as a JACK
  server too busy to answer makes it: ``livegen run`` must exit within its 2 s all the same.
- ``port_close_gil_stall:S``: the same, with the GIL held all the while, as python-rtmidi
  holds it when the close is stuck in RtMidi: no Python thread can run, and livegen's watchdog
  in C must end the process.
- ``sink_close_stall:S``: closing the MIDI output's sink at shutdown takes S seconds more: a
  stall that ``livegen run`` must report with every thread's stack.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time

FAULT_MESSAGE = "injected fault"
WORKER_THREAD = "livegen-worker"
SOUNDING_TIMEOUT_S = 10.0


def counting(n: int):
    """A callable that is True on its nth call only (thread-safe)."""
    lock, calls = threading.Lock(), [0]

    def due() -> bool:
        with lock:
            calls[0] += 1
            return calls[0] == n

    return due


def inject_model_fault(n: int) -> None:
    from livegen.engine.session import Session
    from livegen.model.stream import NoteStream

    sessions: list[Session] = []
    start, sample = Session.start, NoteStream.sample
    due = counting(n)

    def recording_start(self: Session) -> None:
        sessions.append(self)
        start(self)

    def failing_sample(self: NoteStream, *args, **kwargs):
        if threading.current_thread().name == WORKER_THREAD and due():
            deadline = time.monotonic() + SOUNDING_TIMEOUT_S  # mid-answer: a note of it is on now
            while not sessions[0].scheduler.sounding and time.monotonic() < deadline:
                time.sleep(0.002)
            raise RuntimeError(FAULT_MESSAGE)
        return sample(self, *args, **kwargs)

    Session.start = recording_start
    NoteStream.sample = failing_sample


def inject_port_fault(kind: str, n: int) -> None:
    from livegen.io.ports import MidiBackendError, OutputPort

    send = OutputPort.send
    due = counting(n)

    def is_kind(message) -> bool:
        status = message[0] & 0xF0
        on = status == 0x90 and len(message) > 2 and message[2] > 0
        off = status == 0x80 or (status == 0x90 and len(message) > 2 and message[2] == 0)
        return on if kind == "note_on" else off

    def failing_send(self: OutputPort, message) -> None:
        if is_kind(message) and due():
            raise MidiBackendError(f"{FAULT_MESSAGE}: {list(message)} not sent")
        send(self, message)

    OutputPort.send = failing_send


def inject_close_stall(cls: type, seconds: float, hold_gil: bool = False) -> None:
    close = cls.close
    # libc's sleep called through PyDLL keeps the GIL, as a native call that never releases it.
    pause = ctypes.PyDLL(None).sleep if hold_gil else time.sleep

    def stalling_close(self) -> None:
        pause(int(seconds) if hold_gil else seconds)
        close(self)

    cls.close = stalling_close


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--fault":
        print(__doc__, file=sys.stderr)
        return 2
    kind, _, count = argv[1].partition(":")
    if kind == "sample":
        inject_model_fault(int(count))
    elif kind in ("note_on", "note_off"):
        inject_port_fault(kind, int(count))
    elif kind in ("port_close_stall", "port_close_gil_stall"):
        from livegen.io.ports import PortPair

        inject_close_stall(PortPair, float(count), hold_gil=kind == "port_close_gil_stall")
    elif kind == "sink_close_stall":
        from livegen.io.sinks import MessageSink

        inject_close_stall(MessageSink, float(count))
    else:
        raise SystemExit(f"unknown fault {kind!r}")
    from livegen.cli import main as livegen_main

    return livegen_main(argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
