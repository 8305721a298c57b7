"""livegen: a real-time AI MIDI instrument."""

__version__ = "0.1.0"
