"""What livegen's MIDI inputs and outputs share: opening (virtual or by pattern), naming,
following the target by name, closing exactly once.

Without a pattern, a port is a virtual port (``in`` / ``out``) under the client name; with one,
livegen opens its own port and connects it to the existing port that matches (``find_port``:
exact name, then case-insensitive substring).

Reconnecting (``_reopen``) is ``close_port()`` + ``open_port()`` on the same rtmidi object
(rtmidi has no "connect" alone), so the port keeps its name; with JACK the port is unregistered
and registered again, which drops connections others made to it.
"""

from __future__ import annotations

import threading
from typing import Any

from livegen.io.apis import MidiBackendError, delete_client, new_client, resolve_api, rtmidi_module
from livegen.io.listing import find_port, find_target, open_listed, port_names, target_index


class Port:
    """Base of InputPort and OutputPort; subclasses fill the hooks ``_client_options``,
    ``_prepare``, ``_before_destroy`` and ``_destroy``."""

    kind = ""  # "input" or "output"
    _lock_type: Any = threading.Lock

    def __init__(self, api: str, client_name: str, pattern: str | None, port_name: str) -> None:
        if not client_name:
            raise ValueError("empty MIDI client name")
        if not port_name:
            raise ValueError("empty MIDI port name")
        self._lock = self._lock_type()
        self._closed = False
        self._rt: Any = None
        self._api = resolve_api(api) if api == "auto" else api
        self._client_name = client_name
        self._target: str | None = None
        self._port_name = port_name
        self._name = f"{client_name}:{port_name}"
        rtmidi = rtmidi_module()
        client = new_client(self._api, self.kind, client_name, **self._client_options())
        try:
            self._prepare(client)
            before = self._own_side_ports(client_name)
            try:
                if pattern is None:
                    client.open_virtual_port(port_name)
                else:
                    self._target = open_listed(client, lambda names: find_port(names, pattern, self.kind)[0], port_name)
            except (rtmidi.RtMidiError, NotImplementedError) as exc:
                where = "a virtual port" if pattern is None else f"{(self._target or pattern)!r}"
                raise MidiBackendError(f"cannot open MIDI {self.kind} {where} ({self._api}): {exc}") from exc
            self._name = self._resolve_name(before, client_name, port_name)
        except BaseException:
            self._destroy(client)
            raise
        self._rt = client

    # hooks
    def _client_options(self) -> dict[str, Any]:
        """Keyword arguments for the rtmidi constructor."""
        return {}

    def _prepare(self, client: Any) -> None:
        """Configure the fresh rtmidi object before its port opens."""

    def _before_destroy(self) -> None:
        """Runs once in close() before the rtmidi object goes."""

    def _destroy(self, client: Any) -> None:
        delete_client(client)

    # naming
    def _own_side_ports(self, client_name: str) -> list[str] | None:
        """Ports on the side where our own port will appear (an input port is a destination,
        listed by an rtmidi output object, and the other way round); None if unavailable."""
        other = "output" if self.kind == "input" else "input"
        try:
            lister = new_client(self._api, other, f"{client_name}-lister")
        except MidiBackendError:
            return None
        try:
            return port_names(lister)
        except MidiBackendError:  # the list kept changing: name the port by its fallback
            return None
        finally:
            delete_client(lister)

    def _resolve_name(self, before: list[str] | None, client_name: str, port_name: str) -> str:
        """Our port's full name as others see it (``livegen-01:out``; ALSA adds ``128:0``)."""
        fallback = f"{client_name}:{port_name}"
        after = self._own_side_ports(client_name)
        if before is None or after is None:
            return fallback
        new = [n for n in after if n not in before and n.startswith(client_name) and port_name in n]
        return new[0] if len(new) == 1 else fallback

    # public
    @property
    def api(self) -> str:
        """The API this port uses (``auto`` already resolved)."""
        return self._api

    @property
    def client_name(self) -> str:
        return self._client_name

    @property
    def name(self) -> str:
        """This port's full name as other programs see it, e.g. ``livegen:in``."""
        return self._name

    @property
    def target(self) -> str | None:
        """The existing port this one is connected to, or None for a virtual port."""
        return self._target

    @property
    def virtual(self) -> bool:
        return self._target is None

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the port and free its MIDI client; safe to call any number of times."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            client, self._rt = self._rt, None
        self._before_destroy()
        if client is not None:
            self._destroy(client)

    # following the target (see livegen/io/hotplug.py)
    def _find_target(self, client: Any) -> int | None:
        return None if self._target is None else find_target(client, self._target)

    def target_present(self) -> bool | None:
        """Whether the port this one was opened against exists now; None for a virtual or
        closed port.  Cheap enough to poll several times a second (``find_target``)."""
        with self._lock:
            if self._closed or self._target is None or self._rt is None:
                return None
            return self._find_target(self._rt) is not None

    def _reopen(self, client: Any) -> bool:
        """Close our port and open it again against the target, whose index may have changed
        (and whose ALSA address may have: ``_target`` takes its new name)."""
        names = port_names(client)
        index = None if self._target is None else target_index(names, self._target)
        if index is None:
            return False
        name = names[index]
        client.close_port()
        try:
            client.open_port(index, self._port_name)
        except (rtmidi_module().RtMidiError, NotImplementedError) as exc:
            raise MidiBackendError(f"cannot reconnect MIDI {self.kind} {name!r} ({self._api}): {exc}") from exc
        self._target = name
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        to = f" -> {self._target!r}" if self._target else " (virtual)"
        return f"<{type(self).__name__} {self._name!r}{to} {self._api} {state}>"
