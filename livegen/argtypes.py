"""argparse types shared by every subcommand: numbers checked against a range, pitch ranges.

A bad value becomes argparse's usual one-line error naming the flag and the allowed range.
"""

from __future__ import annotations

import argparse
from typing import Callable

from livegen import midi_bytes as mb


_NOUNS = {int: "an integer", float: "a number"}


def number(kind: type, accept: Callable[[float], bool], requirement: str) -> Callable[[str], float]:
    """A parser for ``kind`` values that ``accept`` allows; ``requirement`` words the refusal."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {_NOUNS.get(kind, kind.__name__)}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{value} {requirement}")
        return value

    return parse


def number_in_range(kind: type, low: float, high: float) -> Callable[[str], float]:
    return number(kind, lambda value: low <= value <= high, f"is outside the allowed range {low}..{high}")


def pitch_range(text: str) -> tuple[int, int]:
    """'21-108' or 'A0-C8' -> (low, high) MIDI numbers."""
    from livegen.notes import import_pretty_midi

    pretty_midi = import_pretty_midi()

    def pitch(part: str) -> int:
        part = part.strip()
        if part.isdigit():
            return int(part)
        try:
            return int(pretty_midi.note_name_to_number(part))
        except Exception:
            raise argparse.ArgumentTypeError(f"{part!r} is neither a MIDI number nor a note name like C4") from None

    low_text, sep, high_text = text.partition(":") if ":" in text else text.rpartition("-")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LOW-HIGH, e.g. 21-108 or A0-C8")
    low, high = pitch(low_text), pitch(high_text)
    if not 0 <= low <= high <= 127:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= LOW <= HIGH <= 127")
    return low, high


def end_call_controller(text: str) -> int:
    """A controller number for the end-call switch; never the sustain pedal."""
    value = number_in_range(int, 0, 127)(text)
    if value == mb.CC_SUSTAIN:
        raise argparse.ArgumentTypeError("64 is the sustain pedal, which holds phrases open; pick another controller")
    return value


def host_port(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port), port 1..65535."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT with a port in 1..65535 (e.g. 127.0.0.1:9001)")
    return host, int(port)


def add_prior_arguments(parser: argparse.ArgumentParser, with_defaults: bool = True, about: str = "") -> None:
    """``--key-prior``, ``--register-prior`` and ``--rhythm-temperature``, worded once for every
    command that samples.

    ``with_defaults=False`` leaves them None when not given, so that a preset's values apply
    (``livegen run``); the help names the same defaults either way.  ``about`` prefixes the help
    (``eval``: which continuations they shape)."""
    from livegen.model.key_prior import DEFAULT_STRENGTH as KEY
    from livegen.model.params import DEFAULT_RHYTHM_TEMPERATURE as RHYTHM
    from livegen.model.register_prior import DEFAULT_STRENGTH as REGISTER

    parser.add_argument("--key-prior", type=number_in_range(float, 0.0, 1.0), default=KEY if with_defaults else None,
                        metavar="K", help=f"{about}pitches outside the key of the last notes are 1-K times as likely "
                                          f"(default {KEY:g}; 0 = the model as trained, 1 = the key's pitches only)")
    parser.add_argument("--register-prior", type=number_in_range(float, 0.0, 1.0),
                        default=REGISTER if with_defaults else None, metavar="R",
                        help=f"{about}a pitch an octave beyond the span of the last notes is 1-R times as likely "
                             f"(default {REGISTER:g}; 0 = the model as trained, 1 = never beyond it)")
    parser.add_argument("--rhythm-temperature", type=number_in_range(float, 0.0, 2.0),
                        default=RHYTHM if with_defaults else None, metavar="F",
                        help=f"{about}steps and note lengths sample at the temperature times F (default {RHYTHM:g}; "
                             f"1 = as the pitches, lower = a tidier rhythm with fewer stray held notes)")
