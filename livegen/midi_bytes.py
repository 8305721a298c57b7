"""MIDI status bytes, controller numbers and tiny message builders, as plain ints.

Pure on purpose (no mido/rtmidi import): the assembler parses raw rtmidi byte lists with
these names, sinks build their messages with them, and tests assert on exact bytes.
"""

from __future__ import annotations

import operator

# Channel voice messages: the high nibble of the status byte; the low nibble is the channel.
NOTE_OFF = 0x80
NOTE_ON = 0x90
POLY_AFTERTOUCH = 0xA0
CONTROL_CHANGE = 0xB0
PROGRAM_CHANGE = 0xC0
CHANNEL_AFTERTOUCH = 0xD0
PITCH_BEND = 0xE0

# System common messages.
SYSEX_START = 0xF0
MTC_QUARTER_FRAME = 0xF1
SONG_POSITION = 0xF2
SONG_SELECT = 0xF3
TUNE_REQUEST = 0xF6
SYSEX_END = 0xF7

# System real-time messages (single byte, may arrive at any moment).
TIMING_CLOCK = 0xF8
START = 0xFA
CONTINUE = 0xFB
STOP = 0xFC
ACTIVE_SENSING = 0xFE
RESET = 0xFF

UNDEFINED_STATUS = frozenset({0xF4, 0xF5, 0xF9, 0xFD})
"""Status bytes the MIDI spec leaves undefined; receivers must ignore them."""

# Controller numbers.
CC_BANK_SELECT = 0
CC_MODULATION = 1
CC_VOLUME = 7
CC_PAN = 10
CC_EXPRESSION = 11
CC_BANK_SELECT_LSB = 32
CC_SUSTAIN = 64
CC_SOSTENUTO = 66
CC_SOFT_PEDAL = 67
CC_ALL_SOUND_OFF = 120
CC_RESET_ALL_CONTROLLERS = 121
CC_LOCAL_CONTROL = 122
CC_ALL_NOTES_OFF = 123

PEDAL_DOWN_THRESHOLD = 64
"""A switch controller (sustain, end-call) counts as pressed at values >= 64, per the spec."""

STATUS_BIT = 0x80
STATUS_MASK = 0xF0
CHANNEL_MASK = 0x0F
MAX_CHANNEL = 15
MAX_DATA = 127

CHANNEL_MESSAGE_DATA_BYTES = {
    NOTE_OFF: 2,
    NOTE_ON: 2,
    POLY_AFTERTOUCH: 2,
    CONTROL_CHANGE: 2,
    PROGRAM_CHANGE: 1,
    CHANNEL_AFTERTOUCH: 1,
    PITCH_BEND: 2,
}
"""Data bytes following each channel-message status (high nibble)."""


def check_range(name: str, value: object, low: int, high: int) -> int:
    """Return ``value`` as an int in [low, high]; TypeError/ValueError naming the field otherwise.

    ``operator.index`` accepts numpy integers (the model's output) but rejects floats.
    """
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be in {low}..{high}, got {number}")
    return number


def check_channel(channel: object) -> int:
    return check_range("channel", channel, 0, MAX_CHANNEL)


def check_data(name: str, value: object) -> int:
    return check_range(name, value, 0, MAX_DATA)


def note_on(channel: int, pitch: int, velocity: int) -> list[int]:
    return [NOTE_ON | check_channel(channel), check_data("pitch", pitch), check_data("velocity", velocity)]


def note_off(channel: int, pitch: int, velocity: int = 0) -> list[int]:
    return [NOTE_OFF | check_channel(channel), check_data("pitch", pitch), check_data("velocity", velocity)]


def control_change(channel: int, control: int, value: int) -> list[int]:
    return [CONTROL_CHANGE | check_channel(channel), check_data("control", control), check_data("value", value)]


def program_change(channel: int, program: int) -> list[int]:
    return [PROGRAM_CHANGE | check_channel(channel), check_data("program", program)]


def all_notes_off(channel: int) -> list[int]:
    """CC 123: the receiver releases every note on the channel (sustain still applies)."""
    return control_change(channel, CC_ALL_NOTES_OFF, 0)


def all_sound_off(channel: int) -> list[int]:
    """CC 120: the receiver silences the channel at once, release tails included."""
    return control_change(channel, CC_ALL_SOUND_OFF, 0)
