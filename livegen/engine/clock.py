"""The engine's clocks live in livegen/clock.py (the I/O layer takes a clock too, and must not
import the engine); this name stays for callers that import it from here."""

from livegen.clock import Clock, ManualClock

__all__ = ["Clock", "ManualClock"]
