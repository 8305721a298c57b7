"""End the process from C after a delay: the way out when no Python thread can run any more.

python-rtmidi calls RtMidi without releasing the GIL, so a port close stuck in a JACK server too
loaded to answer stops every Python thread, the one that waits for the close included (seen on a
2-core machine under full load: over 10 s).  Nothing written in Python can end the process then.
Two watchdogs that need no GIL can:

- faulthandler's thread prints every thread's stack (``Timeout (...)!`` first) and can end the
  process, but only with status 1;
- a POSIX timer whose notification thread calls libc's ``_exit`` ends it with any status.  glibc
  starts that thread itself, so no Python code runs on it.

``exit_later`` arms both where the timer exists (Linux): the stacks are printed, then the process
ends with the status asked for.  Elsewhere faulthandler alone ends it, with status 1.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import faulthandler
import sys
from collections.abc import Callable

FALLBACK_EXIT_CODE = 1
"""The status where only faulthandler can end the process: fixed in its C code."""

STACKS_BEFORE_EXIT_S = 0.05
"""How long before the timer ends the process faulthandler prints the stacks."""

_SIGEV_THREAD = 2
_CLOCK_MONOTONIC = 1


class _SigEvent(ctypes.Structure):
    """Linux's ``struct sigevent`` (64 bytes), with its SIGEV_THREAD members."""

    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("function", ctypes.c_void_p), ("attributes", ctypes.c_void_p), ("_pad", ctypes.c_int * 8)]


class _TimeSpec(ctypes.Structure):
    _fields_ = [("seconds", ctypes.c_long), ("nanoseconds", ctypes.c_long)]


class _ITimerSpec(ctypes.Structure):
    _fields_ = [("interval", _TimeSpec), ("value", _TimeSpec)]


def _timer_library() -> ctypes.CDLL | None:
    """The C library with timer_create (libc itself since glibc 2.34, librt before); None
    where there is none (macOS, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    for name in (None, ctypes.util.find_library("rt")):
        try:
            library = ctypes.CDLL(name)
        except OSError:
            continue
        if all(hasattr(library, symbol) for symbol in ("timer_create", "timer_settime", "timer_delete", "_exit")):
            return library
    return None


def _exit_timer(seconds: float, code: int) -> Callable[[], None] | None:
    """A POSIX timer that calls ``_exit(code)`` in ``seconds``; its cancel, or None if it
    could not be made."""
    libc = _timer_library()
    if libc is None:
        return None
    event = _SigEvent(value=code, signo=0, notify=_SIGEV_THREAD,
                      function=ctypes.cast(libc._exit, ctypes.c_void_p).value)
    timer = ctypes.c_void_p()
    if libc.timer_create(_CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer)) != 0:
        return None
    whole = int(seconds)
    due = _ITimerSpec(value=_TimeSpec(whole, max(1, int((seconds - whole) * 1e9))))
    if libc.timer_settime(timer, 0, ctypes.byref(due), None) != 0:
        libc.timer_delete(timer)
        return None
    return lambda: libc.timer_delete(timer)


def exit_later(seconds: float, code: int = 0) -> Callable[[], None] | None:
    """End the process in ``seconds`` from C, printing every thread's stack to stderr first;
    the returned function cancels it.  The status is ``code`` where a POSIX timer exists, else
    FALLBACK_EXIT_CODE.  None, with nothing armed, where neither watchdog can report or run."""
    timer = _exit_timer(seconds, code)
    try:
        if timer is None:
            faulthandler.dump_traceback_later(seconds, exit=True, file=sys.stderr)
        else:
            faulthandler.dump_traceback_later(max(0.001, seconds - STACKS_BEFORE_EXIT_S), file=sys.stderr)
    except (OSError, ValueError, AttributeError):  # a stderr without a file descriptor
        if timer is None:
            return None

    def cancel() -> None:
        faulthandler.cancel_dump_traceback_later()
        if timer is not None:
            timer()

    return cancel
