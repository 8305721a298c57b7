"""Whether the JACK server runs in realtime mode (``jackd -R``), asked of libjack.

Without realtime scheduling, JACK's process cycles can be preempted by any busy process, and a
client whose cycle overruns loses that cycle's MIDI (measured for issue 15: 7 of 1,068 echoed
notes lost on an idle machine at 64 frames, 21 with two busy processes beside it; none with
``-R``).  livegen cannot fix that from its side, so ``livegen run`` says it once.  rtmidi does
not expose the question, so this opens a short-lived JACK client of its own through ctypes
(``jack_client_open`` with JackNoStartServer, ``jack_is_realtime``, ``jack_client_close``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

from livegen.io.apis import quiet_native_stderr

JACK_NO_START_SERVER = 0x01  # jack_options_t
JACK_USE_EXACT_NAME = 0x02


def _libjack() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("jack") or "libjack.so.0"
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.jack_client_open.restype = ctypes.c_void_p
    lib.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    lib.jack_is_realtime.restype = ctypes.c_int
    lib.jack_is_realtime.argtypes = [ctypes.c_void_p]
    lib.jack_client_close.restype = ctypes.c_int
    lib.jack_client_close.argtypes = [ctypes.c_void_p]
    return lib


def jack_server_realtime(client_name: str = "livegen-check") -> bool | None:
    """True or False for the server JACK_DEFAULT_SERVER names (or the default one); None when
    libjack is missing or no server answers (never starts one)."""
    lib = _libjack()
    if lib is None:
        return None
    status = ctypes.c_int(0)
    with quiet_native_stderr():  # libjack prints its failures on fd 2
        client = lib.jack_client_open(client_name.encode(), JACK_NO_START_SERVER, ctypes.byref(status))
    if not client:
        return None
    try:
        return bool(lib.jack_is_realtime(client))
    finally:
        lib.jack_client_close(client)
