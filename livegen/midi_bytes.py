"""MIDI status bytes, controller numbers and tiny message builders, as plain ints.

Pure on purpose (no mido/rtmidi import): the assembler parses raw rtmidi byte lists with
these names, sinks build their messages with them, and tests assert on exact bytes.
"""

from __future__ import annotations

import operator
import re

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


SYSTEM_COMMON_DATA_BYTES = {
    MTC_QUARTER_FRAME: 1,
    SONG_POSITION: 2,
    SONG_SELECT: 1,
    TUNE_REQUEST: 0,
}
"""Data bytes following each defined system-common status (sysex aside)."""


_STATUS_BYTE = re.compile(rb"[\x80-\xff]")


class StreamParser:
    """Whole messages out of raw MIDI bytes fed in arbitrary chunks, by the MIDI 1.0 receiver rules.

    rtmidi normally hands over whole messages, but a broken driver or cable splits, joins and
    corrupts them (and rtmidi's JACK input glues everything after an unterminated sysex into one
    "message" until some message ends in F7); a note-off split in two or sent with running status
    must still end its note, or the player's key stays down forever.  So state carries from one
    ``feed`` to the next:

    - a channel status sets the running status: later data bytes repeat it (``90 3C 64 3E 64`` is
      two note-ons); system common and sysex clear it; real-time bytes (F8-FF) may come anywhere,
      even inside another message, and leave everything as it was;
    - a status byte abandons an unfinished message (truncated messages are dropped) and ends a
      sysex, with or without its F7;
    - sysex bodies are skipped, never buffered, so a huge or endless sysex costs no memory, and
      they are skipped at C speed (a regex finds the next status byte);
    - undefined status bytes (F4, F5 clear the running status; F9, FD do not) and data bytes with
      no status to belong to are ignored, as the spec asks of receivers.

    A chunk is anything ``bytes()`` takes once listed (ints 0-255, numpy ints, bytes); one that
    holds anything else (a float, 300, a string) is dropped whole, and resets the parser.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget any unfinished message, running status and sysex."""
        self._running: int | None = None
        self._partial: list[int] = []
        self._needed = 0  # data bytes that complete _partial
        self._in_sysex = False

    def feed(self, chunk: object) -> list[list[int]]:
        """The messages ``chunk`` completes, in order; never raises."""
        raw = _as_bytes(chunk)
        if raw is None:
            self.reset()
            return []
        if not raw:
            return []
        if not self._partial and not self._in_sysex:
            whole = self._whole(raw)
            if whole is not None:
                return whole
        messages: list[list[int]] = []
        pos, end = 0, len(raw)
        while pos < end:
            byte = raw[pos]
            if byte < STATUS_BIT and (self._in_sysex or (not self._partial and self._running is None)):
                found = _STATUS_BYTE.search(raw, pos)  # sysex body or stray data: skip it
                if found is None:
                    break
                pos = found.start()
                continue
            if byte >= TIMING_CLOCK:
                if byte not in UNDEFINED_STATUS:
                    messages.append([byte])
            elif byte >= STATUS_BIT:
                self._status(byte, messages)
            elif self._partial:
                self._data(byte, messages)
            else:
                self._start(self._running)  # type: ignore[arg-type]  # running status, checked above
                self._data(byte, messages)
            pos += 1
        return messages

    def _whole(self, raw: bytes) -> list[list[int]] | None:
        """The fast path for what rtmidi normally delivers: one complete, clean message."""
        status = raw[0]
        if STATUS_BIT <= status < SYSEX_START:
            if len(raw) == 1 + CHANNEL_MESSAGE_DATA_BYTES[status & STATUS_MASK] and max(raw[1:]) < STATUS_BIT:
                self._running = status
                return [list(raw)]
        elif status == SYSEX_START:
            if raw[-1] == SYSEX_END and len(raw) > 1 and _STATUS_BYTE.search(raw, 1, len(raw) - 1) is None:
                self._running = None
                return []
        elif len(raw) == 1 and status >= TIMING_CLOCK:
            return [] if status in UNDEFINED_STATUS else [[status]]
        return None

    def _status(self, status: int, messages: list[list[int]]) -> None:
        self._partial = []
        self._in_sysex = False
        if status < SYSEX_START:
            self._running = status
            self._start(status)
            return
        self._running = None
        if status == SYSEX_START:
            self._in_sysex = True
        elif status in SYSTEM_COMMON_DATA_BYTES:
            self._start(status)
            if self._needed == 0:
                messages.append(self._partial)
                self._partial = []
        # SYSEX_END outside a sysex, F4, F5: nothing more to do

    def _start(self, status: int) -> None:
        self._partial = [status]
        if status < SYSEX_START:
            self._needed = CHANNEL_MESSAGE_DATA_BYTES[status & STATUS_MASK]
        else:
            self._needed = SYSTEM_COMMON_DATA_BYTES[status]

    def _data(self, byte: int, messages: list[list[int]]) -> None:
        self._partial.append(byte)
        if len(self._partial) > self._needed:
            messages.append(self._partial)
            self._partial = []


def _as_bytes(chunk: object) -> bytes | None:
    """``chunk`` as bytes, or None if it is not a sequence of byte values."""
    try:
        if isinstance(chunk, (list, tuple, bytes, bytearray)):
            return bytes(chunk)
        return bytes(list(chunk))  # type: ignore[call-overload]  # not bytes(5), not a numpy buffer
    except (TypeError, ValueError):
        return None
