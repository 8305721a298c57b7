"""livegen's MIDI ports: ``open_ports`` opens the input and the output together.

This is the public face of livegen/io's port modules; each concern has its own file:

- livegen/io/apis.py      which MIDI APIs exist and connect (``resolve_api``), making rtmidi clients
- livegen/io/listing.py   listing ports and picking one by pattern (``find_port``)
- livegen/io/port.py      what inputs and outputs share: open, name, follow the target, close
- livegen/io/midi_in.py   ``InputPort``: a poll thread fills a bounded, timestamped queue
- livegen/io/midi_out.py  ``OutputPort``: validated, thread-safe sends; releases owed on reconnect
- livegen/io/hotplug.py   following ports by name and the JACK server (``PortWatcher``)

Every public name stays importable from here.
"""

from __future__ import annotations

from typing import NamedTuple

from livegen.io.apis import API_CHOICES, DEFAULT_CLIENT_NAME, MidiBackendError, compiled_apis, resolve_api
from livegen.io.listing import find_port, list_all_ports, list_ports, stable_port_name
from livegen.io.midi_in import DEFAULT_BYTE_CAPACITY, DEFAULT_CAPACITY, InputPort, TimedMessage
from livegen.io.midi_out import OutputPort


class PortPair(NamedTuple):
    """An input and an output opened together; ``with open_ports(...) as (inp, out):``."""

    input: InputPort
    output: OutputPort

    def close(self) -> None:
        """Input first: its poll thread stops before the output goes."""
        try:
            self.input.close()
        finally:
            self.output.close()

    def __enter__(self) -> PortPair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_ports(
    api: str = "auto",
    client_name: str = DEFAULT_CLIENT_NAME,
    input_pattern: str | None = None,
    output_pattern: str | None = None,
    *,
    capacity: int = DEFAULT_CAPACITY,
) -> PortPair:
    """Open livegen's input and output on one API (virtual ``in``/``out`` without patterns).

    The input opens first so that with JACK it is ``livegen:in`` and the output
    ``livegen-01:out`` (DESIGN.md's contract: every rtmidi object is its own JACK client), and
    starts reading last.  If anything fails, what was opened is closed again.
    """
    api = resolve_api(api)
    inp = InputPort(api, client_name, input_pattern, capacity=capacity, start=False)
    try:
        out = OutputPort(api, client_name, output_pattern)
        try:
            inp.start()
        except BaseException:
            out.close()
            raise
    except BaseException:
        inp.close()
        raise
    return PortPair(inp, out)


__all__ = [
    "API_CHOICES",
    "DEFAULT_BYTE_CAPACITY",
    "DEFAULT_CAPACITY",
    "DEFAULT_CLIENT_NAME",
    "InputPort",
    "MidiBackendError",
    "OutputPort",
    "PortPair",
    "TimedMessage",
    "compiled_apis",
    "find_port",
    "list_all_ports",
    "list_ports",
    "open_ports",
    "resolve_api",
    "stable_port_name",
]
