"""MIDI APIs over python-rtmidi: which are compiled in, which connect now, making clients.

rtmidi with JACK, as observed with python-rtmidi 1.5.8 / RtMidi 5.0.0 and jackd 1.9.21:

- Every ``MidiIn``/``MidiOut`` object is its own JACK client, created by the constructor, so the
  first object takes the client name (``livegen``) and later ones get ``livegen-01``,
  ``livegen-02``...  Port names are full ``client:port`` strings.
- No server: the constructor raises ``rtmidi.SystemError`` ("MidiInJack::initialize: JACK server
  not running?"; an ``OSError``) after libjack printed five lines to stderr.  ALSA without
  /dev/snd/seq is the same with "error creating ALSA sequencer client object".  Both become one
  ``MidiBackendError`` line here, with the native noise silenced.
- Any method call on an rtmidi object after ``delete()`` is a segmentation fault, so every
  object is deleted exactly once (``delete_client``; the ports take it out under a lock first).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Iterator

from livegen.errors import LivegenError

API_CHOICES = ("auto", "alsa", "jack", "coremidi", "winmm")
"""Values of ``--midi-api`` (``coremidi``/``winmm`` work where python-rtmidi compiled them)."""

DEFAULT_CLIENT_NAME = "livegen"
ALSA_SEQUENCER = "/dev/snd/seq"

_API_CONSTANTS = {  # our name -> name of the rtmidi constant
    "alsa": "API_LINUX_ALSA",
    "jack": "API_UNIX_JACK",
    "coremidi": "API_MACOSX_CORE",
    "winmm": "API_WINDOWS_MM",
}

_HINTS = {
    "alsa": "use --midi-api jack",
    "jack": "start jackd or use --midi-api alsa",
}


class MidiBackendError(LivegenError, OSError):
    """A MIDI API that is not compiled in, cannot connect (no JACK server...), or failed."""


def rtmidi_module() -> Any:
    """The rtmidi module, imported on first use (``livegen --help`` must start fast)."""
    try:
        import rtmidi
    except ImportError as exc:  # pragma: no cover - a dependency, but say what to do
        raise MidiBackendError("python-rtmidi is not installed (pip install python-rtmidi)") from exc
    return rtmidi


def compiled_apis() -> list[str]:
    """Names of the MIDI APIs this python-rtmidi build has, in our preference order."""
    rtmidi = rtmidi_module()
    compiled = set(rtmidi.get_compiled_api())
    return [name for name, const in _API_CONSTANTS.items() if getattr(rtmidi, const) in compiled]


def _check_api_name(api: str) -> None:
    if api not in API_CHOICES:
        raise ValueError(f"unknown MIDI API {api!r}; choose one of {', '.join(API_CHOICES)}")


def _api_constant(api: str) -> int:
    _check_api_name(api)
    if api == "auto":
        raise ValueError("resolve 'auto' first")
    available = compiled_apis()
    if api not in available:
        raise MidiBackendError(
            f"MIDI API {api!r} is not compiled into python-rtmidi here; "
            f"available: {', '.join(available) or 'none'}"
        )
    return getattr(rtmidi_module(), _API_CONSTANTS[api])


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silence file descriptor 2 for a moment: libjack and alsa-lib print their failures there.

    Python's own ``sys.stderr`` object is flushed first and works again afterwards; only output
    written by any thread during the block is lost, so keep the block short.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no fd 2 (pythonw, some embedders)
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
        finally:
            os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _describe_failure(api: str, exc: BaseException | None) -> str:
    """One line saying why ``api`` cannot be used, with what to do about it."""
    if api == "jack":
        server = os.environ.get("JACK_DEFAULT_SERVER")
        which = f"JACK server {server!r}" if server else "JACK server"
        return f"{which} not running ({_HINTS['jack']})"
    if api == "alsa":
        if sys.platform.startswith("linux") and not os.path.exists(ALSA_SEQUENCER):
            return f"ALSA sequencer not available: {ALSA_SEQUENCER} is missing (load snd-seq or {_HINTS['alsa']})"
        return f"cannot open the ALSA sequencer: {exc} ({_HINTS['alsa']})"
    return f"cannot open the {api} MIDI API: {exc}"


def new_client(api: str, kind: str, client_name: str, **options: Any) -> Any:
    """A fresh ``rtmidi.MidiIn`` (kind ``input``) or ``MidiOut``; a MidiBackendError if it fails.
    ``options`` go to the constructor (``queue_size_limit`` of an input)."""
    rtmidi = rtmidi_module()
    const = _api_constant(api)
    if api == "alsa" and sys.platform.startswith("linux") and not os.path.exists(ALSA_SEQUENCER):
        raise MidiBackendError(_describe_failure(api, None))
    cls = rtmidi.MidiIn if kind == "input" else rtmidi.MidiOut
    try:
        with quiet_native_stderr():
            return cls(const, name=client_name, **options)
    except rtmidi.RtMidiError as exc:
        raise MidiBackendError(_describe_failure(api, exc)) from exc


def delete_client(client: Any) -> None:
    """Close and free an rtmidi object; the caller guarantees this happens once per object."""
    try:
        client.close_port()
    finally:
        client.delete()


def _probe(api: str) -> str | None:
    """None if ``api`` can connect now, else the one-line reason."""
    try:
        delete_client(new_client(api, "output", f"{DEFAULT_CLIENT_NAME}-probe"))
    except MidiBackendError as exc:
        return str(exc)
    return None


def resolve_api(api: str = "auto") -> str:
    """The concrete API name for ``api``, checked to connect; MidiBackendError says why not.

    ``auto`` takes the first compiled API that connects, in the order alsa (only where
    /dev/snd/seq exists, on Linux), jack, coremidi, winmm.
    """
    _check_api_name(api)
    if api != "auto":
        reason = _probe(api)
        if reason is not None:
            raise MidiBackendError(reason)
        return api
    reasons = []
    for name in compiled_apis():
        reason = _probe(name)
        if reason is None:
            return name
        reasons.append(f"{name}: {reason}")
    raise MidiBackendError(f"no usable MIDI API: {'; '.join(reasons) or 'none compiled into python-rtmidi'}")
