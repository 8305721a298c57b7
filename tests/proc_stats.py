"""A live process's resident memory and thread count, from /proc (Linux), for the reliability tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcStatus:
    rss_mb: float  # VmRSS: resident now (not the peak)
    threads: int


def proc_status(pid: int) -> ProcStatus:
    """VmRSS and Threads of ``pid``; AssertionError if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError as exc:
        raise AssertionError(f"process {pid} is gone: {exc}") from None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return ProcStatus(round(int(fields["VmRSS"].split()[0]) / 1024.0, 1), int(fields["Threads"]))
