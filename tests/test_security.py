"""What livegen must never do: listen on the network, or run code from a model or preset file.

* The daemon (with its FluidSynth synth on JACK audio) holds Unix sockets only: every socket
  inode in /proc/PID/fd is looked up in the process's /proc/PID/net tables.  FluidSynth's TCP
  shell server (``shell.port``, 9800) only starts when a program calls ``new_fluid_server``;
  livegen never does, and this is what proves it.
* A pickle renamed ``model.safetensors`` is refused by every command that loads models, and the
  code its ``__reduce__`` names never runs (a marker file it would create never appears).
* Presets are TOML (data only); the paths in them are resolved from the preset's folder and
  checked (see also tests/test_presets.py).
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_driver import wait
from factories import melody, tiny_model_dir
from livegen import presets
from livegen.errors import PresetError
from livegen.model.checkpoint import WEIGHTS_FILE
from livegen.notes import Track, write_midi
from midi_probe import note_ons

INET_TABLES = ("tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6")
INODE_COLUMN = {"unix": 6, "netlink": 9, **{table: 9 for table in INET_TABLES}}


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process ``pid`` holds open (threads share its fd table)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed while we looked
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            inodes.add(int(match.group(1)))
    return inodes


def table_inodes(pid: int, table: str) -> set[int]:
    """Inodes listed in /proc/PID/net/TABLE (every socket of the process's network namespace)."""
    try:
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    except OSError:  # a protocol this kernel does not have
        return set()
    column = INODE_COLUMN[table]
    return {int(fields[column]) for fields in (line.split() for line in lines) if len(fields) > column}


def network_sockets(pid: int) -> dict[str, set[int]]:
    """The process's sockets that are not Unix or netlink sockets, by table ('unknown' if none)."""
    mine = socket_inodes(pid)
    found = {table: mine & table_inodes(pid, table) for table in INET_TABLES}
    local = table_inodes(pid, "unix") | table_inodes(pid, "netlink")
    unknown = mine - local - set().union(*found.values())
    return {table: inodes for table, inodes in {**found, "unknown": unknown}.items() if inodes}


@pytest.mark.skipif(not Path("/proc/self/net/unix").exists(), reason="needs Linux /proc")
def test_the_socket_check_sees_network_sockets_and_passes_unix_ones():
    import socket

    with socket.socket(socket.AF_UNIX) as local:
        assert network_sockets(os.getpid()) == {}
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            tcp.listen()
            found = network_sockets(os.getpid())
            assert found.pop("tcp") == {os.fstat(tcp.fileno()).st_ino}
            assert found == {"unknown": {os.fstat(udp.fileno()).st_ino}}  # unbound: in no table, still caught
        assert local.fileno() >= 0


@pytest.mark.skipif(not Path("/proc/self/net/unix").exists(), reason="needs Linux /proc")
def test_the_daemon_and_its_synth_open_no_network_socket(daemon):
    from livegen.errors import LivegenError
    from livegen.io.synth import find_soundfont

    try:
        find_soundfont(None)
    except LivegenError as exc:
        pytest.skip(f"the synth cannot run here: {exc}")
    d = daemon("--synth", "--audio-driver", "jack", "--length", "4")
    pid = d.process.pid
    assert socket_inodes(pid), "a JACK client holds Unix sockets: the /proc lookup sees nothing"
    assert network_sockets(pid) == {}
    d.probe.play([60, 64, 67])
    assert wait(lambda: len(note_ons(d.probe.messages)) >= 4, timeout=30)  # synth and model at work
    assert network_sockets(pid) == {}
    assert d.stop()[0] == 0
    stderr = d.process.stderr.read()
    assert "synth on (jack" in stderr, stderr  # the synth really ran in this test


def test_no_code_path_starts_a_fluidsynth_server():
    """The static half of the check above: FluidSynth's shell/server API is never called."""
    package = Path(presets.__file__).resolve().parent  # not the working directory: pytest may run from anywhere
    files = sorted(package.rglob("*.py"))
    assert package / "io" / "synth.py" in files, f"the package's sources were not found under {package}"
    source = "\n".join(p.read_text() for p in files)
    assert "import fluidsynth" in source  # the scan sees the code that does load FluidSynth
    for name in ("new_fluid_server", "fluid_server", "shell.port", "new_fluid_cmd_handler", "new_fluid_shell"):
        assert name not in source


# --- model files cannot run code ------------------------------------------------------------------


class Exploit:
    """A pickle payload: unpickling calls open(marker, "w"), i.e. creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def livegen(*argv, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livegen", *map(str, argv)], capture_output=True, text=True,
                          timeout=180, env=env)


def test_a_pickle_renamed_model_safetensors_never_runs_in_any_command(tmp_path, capsys):
    import torch

    from livegen.cli import main

    marker = tmp_path / "code-ran"
    primer = tmp_path / "primer.mid"
    write_midi(primer, [Track("p", melody(40))])
    plain = tiny_model_dir(tmp_path / "plain")
    (plain / WEIGHTS_FILE).write_bytes(pickle.dumps({"weights": Exploit(marker)}))
    zipped = tiny_model_dir(tmp_path / "zipped")
    torch.save({"weights": Exploit(marker)}, zipped / WEIGHTS_FILE)  # torch.save's zip holds a pickle too

    def commands(model):
        return {"generate": ["generate", primer, "-o", tmp_path / "o.mid", "--model", model],
                "eval": ["eval", model, "--data", primer, "--no-cache", "--quiet", "--workers", "0"],
                "run": ["run", "--model", model, "--midi-api", "jack", "--no-synth"]}

    def check(model, code, stderr, command):
        assert code == 2, stderr
        assert "Traceback" not in stderr
        lines = stderr.splitlines()
        assert len(lines) == 1 and "pickle or torch.save file" in lines[0], stderr
        assert lines[0].startswith(f"livegen {command}: error: {model / WEIGHTS_FILE}")
        assert not marker.exists()

    for model in (plain, zipped):  # in this process: what the command line calls
        for command in ("generate", "eval"):
            code = main([str(a) for a in commands(model)[command]])
            check(model, code, capsys.readouterr().err, command)
    no_jack = {**os.environ, "JACK_DEFAULT_SERVER": "livegen-no-such-server", "JACK_NO_START_SERVER": "1"}
    for model, command in ((plain, "run"), (zipped, "run"), (zipped, "generate")):  # real processes
        result = livegen(*commands(model)[command], env=no_jack)
        check(model, result.returncode, result.stderr, command)


# --- presets: data only, paths resolved and checked -----------------------------------------------


def test_preset_paths_resolve_from_the_preset_folder_not_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "sets").mkdir()
    model = tiny_model_dir(tmp_path / "sets" / "models" / "mine")
    (tmp_path / "sets" / "other.toml").write_text('description = "other"\n')
    (tmp_path / "sets" / "mine.toml").write_text('model = "models/mine"\n[controls]\nswitch = ["other.toml"]\n')
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    loaded = presets.load(str(tmp_path / "sets" / "mine.toml"))
    assert loaded.model == str(model.resolve())
    assert [p.description for p in presets.load_switch_list(loaded)] == ["other"]


def test_a_preset_name_cannot_point_midi_learn_outside_the_preset_folder(tmp_path):
    """`run --learn` writes a preset chosen by name to user_dir()/NAME.toml: NAME must be a name."""
    for name in ("../../.bashrc", "/etc/x", "sub/../../x", "..", "a\\b"):
        path = tmp_path / "p.toml"
        path.write_text(f"name = {presets._toml_value(name)}\n")
        with pytest.raises(PresetError, match=r"p\.toml: name = .*a preset name"):
            presets.load(str(path))


def test_presets_are_data_toml_cannot_name_code(tmp_path):
    """Whatever a TOML file holds, loading yields the Preset dataclasses or a PresetError."""
    path = tmp_path / "evil.toml"
    path.write_text('model = "__import__(\'os\').system(\'touch x\')"\n')
    with pytest.raises(PresetError, match="no such model folder"):
        presets.load(str(path))
    assert not (tmp_path / "x").exists() and not Path("x").exists()


# --- OSC: loopback UDP only, unless --osc-host says otherwise -------------------------------------


def udp_endpoints(pid: int, inodes: set[int]) -> list[tuple[tuple[str, int], tuple[str, int]]]:
    """(local, remote) (address, port) of the IPv4 UDP sockets with these inodes."""
    import socket
    import struct

    def endpoint(text: str) -> tuple[str, int]:
        address, port = text.split(":")
        return socket.inet_ntoa(struct.pack("=I", int(address, 16))), int(port, 16)

    rows = [line.split() for line in Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]]
    return [(endpoint(row[1]), endpoint(row[2])) for row in rows if int(row[9]) in inodes]


@pytest.mark.skipif(not Path("/proc/self/net/udp").exists(), reason="needs Linux /proc")
def test_the_daemon_with_osc_holds_only_loopback_udp_sockets(daemon):
    import socket

    from pythonosc.osc_message_builder import OscMessageBuilder

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        d = daemon("--osc-port", "0", "--osc-send", f"127.0.0.1:{receiver.getsockname()[1]}")
        assert wait(lambda: d.events("osc_listening"), timeout=5)
        port = d.events("osc_listening")[0]["port"]
        found = network_sockets(d.process.pid)
        assert set(found) == {"udp"}, found  # no TCP, no IPv6, nothing unknown
        endpoints = udp_endpoints(d.process.pid, found["udp"])
        unconnected = ("0.0.0.0", 0)
        listening = [local for local, remote in endpoints if remote == unconnected]
        sending = [(local, remote) for local, remote in endpoints if remote != unconnected]
        assert listening == [("127.0.0.1", port)], endpoints  # loopback only
        assert [(local[0], remote) for local, remote in sending] == \
            [("127.0.0.1", ("127.0.0.1", receiver.getsockname()[1]))], endpoints  # connected, on loopback
        message = OscMessageBuilder("/livegen/temperature")
        message.add_arg(0.5)
        receiver.sendto(message.build().dgram, ("127.0.0.1", port))  # the socket seen is the one that works
        assert wait(lambda: d.events("control"), timeout=5)
        assert network_sockets(d.process.pid) == found
        assert d.stop()[0] == 0
