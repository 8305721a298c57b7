"""Listing MIDI ports and picking one by name (``livegen ports``, ``--input/--output PATTERN``).

An *input* is a port livegen can read from (another program's output, a keyboard), an *output*
one it can write to, as rtmidi and ``livegen ports`` name them.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Callable, Sequence

from livegen.errors import PortNotFoundError
from livegen.io.apis import DEFAULT_CLIENT_NAME, MidiBackendError, compiled_apis, delete_client, new_client, resolve_api

log = logging.getLogger(__name__)

_ALSA_ADDRESS = re.compile(r" \d+:\d+$")


LIST_ATTEMPTS = 20


def port_names(client: object) -> list[str]:
    """``client.get_ports()``, listed again when a port vanished while it was being listed.

    rtmidi counts the ports, then asks each one's name; with JACK a client that leaves between
    the two makes a name lookup fail (InvalidPortError), and a daemon starting beside others
    that come and go must not crash on it.  A list that keeps failing is a MidiBackendError."""
    from livegen.io.apis import rtmidi_module

    error = rtmidi_module().RtMidiError
    for _ in range(LIST_ATTEMPTS):
        try:
            return list(client.get_ports())  # type: ignore[attr-defined]
        except error as exc:
            last = exc
            time.sleep(0.001)
    raise MidiBackendError(f"cannot list MIDI ports: they kept changing while listed ({last})") from last


def open_listed(client: object, pick: Callable[[list[str]], int], port_name: str) -> str:
    """Open ``client``'s port ``port_name`` against the port ``pick`` chooses from its list;
    returns that port's name.

    rtmidi opens by index, and a JACK client that registers or leaves a port between the listing
    and the opening shifts the indices: the port opened would be another program's.  So the list
    is taken again after opening, and the port reopened until both lists agree."""
    for _ in range(LIST_ATTEMPTS):
        names = port_names(client)
        index = pick(names)
        client.open_port(index, port_name)  # type: ignore[attr-defined]
        if port_names(client) == names:
            return names[index]
        client.close_port()  # type: ignore[attr-defined]
    raise MidiBackendError("cannot open a MIDI port: the port list kept changing while it was opened")


def list_ports(api: str = "auto") -> dict[str, list[str]]:
    """``{"inputs": [...], "outputs": [...]}`` for one API (``auto`` resolves first)."""
    api = resolve_api(api) if api == "auto" else api
    lister_name = f"{DEFAULT_CLIENT_NAME}-ports"
    result = {}
    for kind, key in (("input", "inputs"), ("output", "outputs")):
        client = new_client(api, kind, lister_name)
        try:
            result[key] = port_names(client)
        finally:
            delete_client(client)
    return result


def list_all_ports(errors: dict[str, str] | None = None) -> dict[str, dict[str, list[str]]]:
    """``list_ports`` for every compiled API that connects now, keyed by API name.

    APIs that cannot connect are left out; pass a dict as ``errors`` to get their reasons.
    """
    found = {}
    for api in compiled_apis():
        try:
            found[api] = list_ports(api)
        except MidiBackendError as exc:
            if errors is not None:
                errors[api] = str(exc)
    return found


def find_port(names: Sequence[str], pattern: str, kind: str) -> tuple[int, str]:
    """``(index, name)`` of the port in ``names`` that ``pattern`` picks.

    An exact name wins, then a case-insensitive exact name, then the first name that contains
    ``pattern`` case-insensitively, in the backend's order.  When several names contain it, the
    first is taken and a warning names the others: a device often has several ports and the
    first is usually the main one ("Keystation 49 MIDI 1" before "... MIDI 2"); pass a longer
    pattern to pick another.  ``kind`` ("input" or "output") only words the error, a
    PortNotFoundError listing the ports that exist.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"port pattern must be a string, not {type(pattern).__name__}")
    if not pattern:
        raise ValueError("empty port pattern")
    for index, name in enumerate(names):
        if name == pattern:
            return index, name
    folded = pattern.casefold()
    for index, name in enumerate(names):
        if name.casefold() == folded:
            return index, name
    matches = [(index, name) for index, name in enumerate(names) if folded in name.casefold()]
    if not matches:
        existing = ", ".join(names) if names else "none"
        raise PortNotFoundError(f"no MIDI {kind} port matches {pattern!r}; {kind}s are: {existing}")
    if len(matches) > 1:
        others = ", ".join(name for _, name in matches[1:])
        log.warning("MIDI %s pattern %r matches %d ports; using %r (also: %s)",
                    kind, pattern, len(matches), matches[0][1], others)
    return matches[0]


def stable_port_name(name: str) -> str:
    """A port's name without ALSA's trailing ``client:port`` address (``Keys:Keys MIDI 1 20:0``
    -> ``Keys:Keys MIDI 1``): a replugged device keeps its name, not always its numbers."""
    return _ALSA_ADDRESS.sub("", name)


def target_index(names: Sequence[str], target: str) -> int | None:
    """Index of the port named ``target`` (by ``stable_port_name``) in ``names``, or None."""
    wanted = stable_port_name(target)
    for index, name in enumerate(names):
        if stable_port_name(name) == wanted:
            return index
    return None


def find_target(client: object, target: str) -> int | None:
    """``target_index`` in ``client``'s current port list.  ``get_ports()`` on an existing rtmidi
    object makes no server round trip (libjack reads shared memory, ALSA asks the kernel:
    0.2 ms), so this can be polled."""
    return target_index(port_names(client), target)
