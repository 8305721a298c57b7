"""The `--log-json` event stream: one JSON object per line, times in time.monotonic() seconds.

Contract events (DESIGN.md): ready, trigger, note_on, note_off, error.  Other events (barge_in,
dropped, ...) may be added; readers ignore what they don't know.  Writes are serialised by a lock
and flushed per line, so a killed daemon leaves a readable log.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import IO, Any

from livegen.errors import OutputFileError


class EventLog:
    """Appends events to a file (or nowhere); also keeps counters the status line shows."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self.errors = 0
        if path is not None:
            path = Path(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "w", buffering=1, encoding="utf-8")
            except OSError as exc:
                raise OutputFileError(path, f"cannot write the event log ({exc.strerror or exc})") from exc

    def __call__(self, record: dict[str, Any]) -> None:
        self.emit(record)

    def emit(self, record: dict[str, Any]) -> None:
        if record.get("event") == "error":
            self.errors += 1
        if self._file is None:
            return
        line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
