"""One exception hierarchy, so the CLI can turn every expected failure into one clear line.

Each class also derives from the builtin a caller would expect (ValueError for bad data,
OSError for devices and files), so code outside livegen can catch them the usual way.
"""


class LivegenError(Exception):
    """Base of every error livegen raises on purpose."""


class MidiFileError(LivegenError, ValueError):
    """A MIDI file that cannot be read or has nothing usable in it."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class OutputFileError(LivegenError, OSError):
    """An output file (MIDI, audio, image) that cannot be written."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ModelError(LivegenError, ValueError):
    """A model file or config that is missing, corrupt or inconsistent."""


class SoundfontError(LivegenError, OSError):
    """No usable SoundFont, or FluidSynth itself is missing."""


class PortNotFoundError(LivegenError, OSError):
    """A MIDI port name that matches none of the existing ports."""


class PresetError(LivegenError, ValueError):
    """A preset file with an unknown key, a wrong type or a value out of range."""


class TrainingDataError(LivegenError, ValueError):
    """Training or evaluation data that matches no files or yields no usable pieces."""
