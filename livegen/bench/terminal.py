"""A pseudo-terminal for `livegen bench latency --view`: the daemon's live view draws into it
(``--view-tty PATH``) while a thread reads and counts what it draws, as a terminal would."""

from __future__ import annotations

import fcntl
import os
import struct
import termios
import threading


class PseudoTerminal:
    """A pty of ``columns`` x ``rows``; ``path`` is the device the view opens, ``drawn`` the bytes
    it wrote so far.  ``close()`` stops the reader (after the view has ended)."""

    def __init__(self, columns: int = 120, rows: int = 40) -> None:
        self._master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.path = os.ttyname(slave)
        self._slave = slave  # kept open so the reader never sees EOF between views
        self.drawn = 0
        self._thread = threading.Thread(target=self._drain, name="bench-pty", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # closed
                return
            if not data:
                return
            self.drawn += len(data)

    def close(self) -> None:
        os.close(self._slave)
        os.close(self._master)
        self._thread.join(2.0)

    def __enter__(self) -> "PseudoTerminal":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
