"""Broken MIDI files given to every command that reads one: one clear line, exit 2, never a traceback.

Real files (the shipped demo phrase and files written by livegen.notes.write_midi) are mutated
by hypothesis: truncated, bytes flipped, header and track lengths that lie, random events with
running status.  Most cases go through ``livegen.cli.main`` in this process (what the command
line calls, so many examples stay fast); a few run `python -m livegen` for real.  For `train` and
`eval` over a folder, broken files are skipped and counted and the good ones still work.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from factories import melody, tiny_model_dir
from livegen.cli import main
from livegen.errors import MidiFileError
from livegen.notes import Note, Track, load_pretty_midi, read_midi, read_tracks, write_midi
from livegen.train.data import ingest

DEMO = Path(str(resources.files("livegen") / "data" / "demo_phrase.mid"))
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def written_file() -> bytes:
    """A type-1 file as livegen writes it: two instruments, programs, a chord."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"livegen-bad-files-{os.getpid()}.mid"
    chord = [Note(48, 0.0, 1.0, 70), Note(52, 0.0, 1.0, 70), Note(55, 0.0, 1.0, 70)]
    write_midi(path, [Track("lead", melody(12), program=73), Track("pad", chord, program=89)])
    try:
        return path.read_bytes()
    finally:
        path.unlink()


SOURCES = {"demo": DEMO.read_bytes(), "written": written_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny")


def run_cli(*argv) -> tuple[int, str, str]:
    """``livegen ARGV`` in this process -> (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, err: str, command: str, path: Path, *fragments: str) -> None:
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"livegen {command}: error: {path}"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def check_generate(model: Path, folder: Path, data: bytes) -> None:
    """The property every mutated file must have under `generate`: notes or one error line."""
    primer = folder / "fuzz.mid"
    primer.write_bytes(data)
    out = folder / "out.mid"
    out.unlink(missing_ok=True)
    code, _, err = run_cli("generate", primer, "-o", out, "--model", model, "--length", "1", "--seed", "1")
    if code == 0:
        notes = read_midi(primer)
        assert all(0 <= n.pitch <= 127 and math.isfinite(n.start) and math.isfinite(n.end) for n in notes)
        written = {track.name: track.notes for track in read_tracks(out)}  # exit 0 means a file was written
        assert len(written["livegen"]) == 1 and "primer" in written, written
    else:
        assert_one_line_error(code, err, "generate", primer, "MIDI file" if "no notes" not in err else "no notes")
        assert not out.exists()


# --- hypothesis: mutations of real files ---------------------------------------------------------


@st.composite
def flipped(draw) -> bytes:
    data = bytearray(SOURCES[draw(st.sampled_from(sorted(SOURCES)))])
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def spliced(draw) -> bytes:
    """Bytes deleted or inserted somewhere: every later offset and length is now wrong."""
    data = SOURCES[draw(st.sampled_from(sorted(SOURCES)))]
    at = draw(st.integers(0, len(data)))
    if draw(st.booleans()):
        return data[:at] + data[at + draw(st.integers(1, 16)) :]
    return data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]


def chunks(data: bytes) -> list[int]:
    """Offsets of the length fields of the header and of every track chunk."""
    offsets, at = [4], 8 + struct.unpack(">I", data[4:8])[0]
    while at + 8 <= len(data):
        offsets.append(at + 4)
        at += 8 + struct.unpack(">I", data[at + 4 : at + 8])[0]
    return offsets


@st.composite
def lying_header(draw) -> bytes:
    """One header field or chunk length replaced: zero tracks, huge lengths, SMPTE division..."""
    data = bytearray(SOURCES[draw(st.sampled_from(sorted(SOURCES)))])
    field = draw(st.sampled_from(["length", "format", "tracks", "division"]))
    if field == "length":
        at = draw(st.sampled_from(chunks(bytes(data))))
        value = draw(st.one_of(st.sampled_from([0, 1, 5, 0x7FFFFFFF, 0xFFFFFFFF]), st.integers(0, 2**32 - 1)))
        data[at : at + 4] = struct.pack(">I", value)
    else:
        at = {"format": 8, "tracks": 10, "division": 12}[field]
        value = draw(st.one_of(st.sampled_from([0, 1, 2, 3, 0x7FFF, 0x8000, 0xE728, 0xFFFF]), st.integers(0, 0xFFFF)))
        data[at : at + 2] = struct.pack(">H", value)
    return bytes(data)


def vlq(value: int) -> bytes:
    out = [value & 0x7F]
    while value > 0x7F:
        value >>= 7
        out.append(0x80 | (value & 0x7F))
    return bytes(reversed(out))


DATA = st.integers(0, 127)
DELTA = st.one_of(st.integers(0, 200), st.sampled_from([0x0FFFFFFF, 1_000_000, 20_000_000]))


@st.composite
def event(draw) -> bytes:
    """One event, mostly well formed: channel messages, running status (also after meta and
    sysex, where it is not allowed), meta and sysex events whose lengths may lie, stray bytes."""
    kind = draw(st.sampled_from(["channel", "running", "meta", "sysex", "stray"]))
    delta = vlq(draw(DELTA))
    if kind == "channel":
        status = draw(st.integers(0x80, 0xEF))
        size = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
        return delta + bytes([status, *draw(st.lists(DATA, min_size=size, max_size=size))])
    if kind == "running":
        return delta + bytes(draw(st.lists(DATA, min_size=1, max_size=2)))
    payload = draw(st.binary(max_size=6))
    length = draw(st.one_of(st.just(len(payload)), st.integers(0, 2**21)))
    if kind == "meta":
        return delta + bytes([0xFF, draw(st.sampled_from([0x00, 0x01, 0x03, 0x20, 0x2F, 0x51, 0x54, 0x58, 0x59, 0x7F]))]) \
            + vlq(length) + payload
    if kind == "sysex":
        return delta + bytes([draw(st.sampled_from([0xF0, 0xF7]))]) + vlq(length) + payload
    return bytes(draw(st.lists(st.integers(0, 255), min_size=1, max_size=3)))


@st.composite
def random_tracks(draw) -> bytes:
    """A well-formed chunk structure around random events (see event), with huge delta times."""
    tracks = []
    for _ in range(draw(st.integers(1, 3))):
        body = bytearray([0, 0x90, 60, 100, 0x60, 0x80, 60, 0])  # one real note, so some of these parse
        for _ in range(draw(st.integers(0, 10))):
            body += draw(event())
        if draw(st.booleans()):
            body += bytes([0, 0xFF, 0x2F, 0])
        tracks.append(b"MTrk" + struct.pack(">I", len(body)) + bytes(body))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(tracks), draw(st.sampled_from([96, 480, 960, 1])))
    return header + b"".join(tracks)


@pytest.mark.parametrize("strategy", [flipped(), spliced(), lying_header(), random_tracks()],
                         ids=["flipped", "spliced", "lying-header", "random-events"])
def test_mutated_files_give_notes_or_one_line_through_generate(strategy, model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")

    @FUZZ
    @given(data=strategy)
    def check(data):
        check_generate(model, folder, data)

    check()


@FUZZ
@given(data=st.one_of(flipped(), lying_header(), random_tracks()))
def test_plot_and_render_readers_raise_only_midi_file_errors(data):
    """read_tracks (plot) and load_pretty_midi (render) fail the same clear way as read_midi."""
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"livegen-fuzz-{os.getpid()}.mid"
    path.write_bytes(data)
    try:
        for reader in (read_tracks, load_pretty_midi):
            try:
                reader(path)
            except MidiFileError as exc:
                assert str(path) in str(exc) and "\n" not in str(exc)
    finally:
        path.unlink()


# --- deterministic cases -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_every_truncation_says_truncated(name, tmp_path):
    data, path = SOURCES[name], tmp_path / "cut.mid"
    for length in range(len(data)):
        path.write_bytes(data[:length])
        with pytest.raises(MidiFileError) as info:
            read_midi(path)
        message = str(info.value)
        assert message.startswith(f"{path}: not a readable MIDI file (") and "\n" not in message
        expected = "empty file" if length == 0 else "does not start with MThd" if length < 4 else "truncated"
        assert expected in message, (length, message)


def header(tracks: int = 1, division: int = 480, length: int = 6) -> bytes:
    return b"MThd" + struct.pack(">IHHH", length, 1, tracks, division)


def track(body: bytes, length: int | None = None) -> bytes:
    return b"MTrk" + struct.pack(">I", len(body) if length is None else length) + body


NOTE = bytes([0, 0x90, 60, 100, 0x60, 0x80, 60, 0, 0, 0xFF, 0x2F, 0])
CASES = {
    "empty": (b"", "empty file"),
    "text": (b"just some text, renamed .mid\n", "does not start with MThd"),
    "wav": (b"RIFF\x24\x00\x00\x00WAVEfmt ", "does not start with MThd"),
    "zero tracks": (header(tracks=0), "no tracks"),
    "more tracks declared": (header(tracks=3) + track(NOTE), "declares 3 tracks"),
    "header length 0": (header(length=0) + track(NOTE), "declares 0 bytes"),
    "header length huge": (header(length=0xFFFFFFFF) + track(NOTE), "declares 4294967295 bytes"),
    "track length huge": (header() + track(NOTE, 0x7FFFFFFF), "track 1 declares 2147483647 bytes"),
    "track length short": (header() + track(NOTE, 3), "truncated or corrupt"),
    "empty track": (header() + track(b""), "track 1 is empty"),
    "ticks per beat 0": (header(division=0) + track(NOTE), "0 ticks per beat"),
    "SMPTE division": (header(division=0xE728) + track(NOTE), "SMPTE"),
    "alien chunk": (header() + b"XFIH" + struct.pack(">I", 2) + b"ab" + track(NOTE), "should start with MTrk"),
    "running status without status": (header() + track(bytes([0, 60, 100, 0, 0xFF, 0x2F, 0])), "running status"),
    "tempo of 0": (header() + track(bytes([0, 0xFF, 0x51, 3, 0, 0, 0]) + NOTE), "tempo of 0"),
    "short tempo event": (header() + track(bytes([0, 0xFF, 0x51, 1, 5]) + NOTE), "corrupt event data"),
    "huge delta time": (header() + track(bytes([0, 0x90, 60, 100, 0xFF, 0xFF, 0xFF, 0x7F, 0x80, 60, 0])),
                        "likely corrupt"),
    "meta length huge": (header() + track(bytes([0, 0xFF, 0x01, 0x8F, 0xFF, 0xFF, 0x7F, 65])), "exceeds maximum"),
    "note on without off": (header() + track(bytes([0, 0x90, 60, 100, 0, 0xFF, 0x2F, 0])), "contains no notes"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_files_name_the_problem_in_every_reading_command(name, tmp_path, model):
    data, fragment = CASES[name]
    path = tmp_path / "crafted.mid"
    path.write_bytes(data)
    code, _, err = run_cli("generate", path, "-o", tmp_path / "o.mid", "--model", model)
    assert_one_line_error(code, err, "generate", path, fragment)
    code, _, err = run_cli("plot", path, "-o", tmp_path / "o.png")
    assert_one_line_error(code, err, "plot", path, fragment)
    if fragment != "contains no notes":  # render plays an empty file as silence
        with pytest.raises(MidiFileError, match=fragment):
            load_pretty_midi(path)  # what `render` reads with; rendering itself needs a SoundFont


def test_warnings_of_odd_but_readable_files_stay_off_stderr(tmp_path, model, recwarn):
    tempo = bytes([0, 0xFF, 0x51, 3, 0x07, 0xA1, 0x20])  # a tempo event on the second track
    path = tmp_path / "odd.mid"
    path.write_bytes(header(tracks=2) + track(NOTE) + track(tempo + NOTE))
    code, out, err = run_cli("generate", path, "-o", tmp_path / "o.mid", "--model", model, "--length", "2")
    assert code == 0 and err == "" and "2 new notes" in out
    assert not [w for w in recwarn if "pretty_midi" in str(w.filename)]


def test_directories_devices_and_missing_files(tmp_path, model):
    folder = tmp_path / "folder.mid"
    folder.mkdir()
    for path, fragment in [(folder, "is a directory"), (Path("/dev/null"), "not a regular file"),
                           (tmp_path / "missing.mid", "no such file")]:
        code, _, err = run_cli("generate", path, "-o", tmp_path / "o.mid", "--model", model)
        assert_one_line_error(code, err, "generate", path, fragment)
        code, _, err = run_cli("plot", path, "-o", tmp_path / "o.png")
        assert_one_line_error(code, err, "plot", path, fragment)


def without_root_file_access() -> None:
    """preexec_fn: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the bounding set, so a root
    child (CI runs as root) obeys file modes like anyone else; a non-root child has neither."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_file(tmp_path, model, monkeypatch):
    path = tmp_path / "locked.mid"
    path.write_bytes(SOURCES["demo"])
    path.chmod(0)
    try:  # a real process that file modes bind, root or not
        result = subprocess.run([sys.executable, "-m", "livegen", "generate", str(path), "-o", str(tmp_path / "o.mid"),
                                 "--model", str(model)], capture_output=True, text=True, timeout=120,
                                preexec_fn=without_root_file_access if os.geteuid() == 0 else None)
    finally:
        path.chmod(0o644)
    assert_one_line_error(result.returncode, result.stderr, "generate", path, "cannot read (Permission denied)")
    assert not (tmp_path / "o.mid").exists()

    readable = tmp_path / "open.mid"
    readable.write_bytes(SOURCES["written"])
    read_bytes = Path.read_bytes

    def denied(self):
        if self.name == "locked.mid":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", denied)
    code, _, err = run_cli("plot", path, "-o", tmp_path / "o.png")
    assert_one_line_error(code, err, "plot", path, "cannot read (Permission denied)")
    result = ingest([str(path), str(readable)], None, progress=False, min_notes=1)  # train/eval: skipped
    assert result.skipped == [(str(path), "cannot read (Permission denied)")] and len(result.pieces) == 1


# --- train and eval over folders with broken files -----------------------------------------------

TINY_TRAIN = ["--hidden", "16", "--layers", "1", "--window", "32", "--batch-size", "8", "--workers", "0",
              "--threads", "1", "--quiet", "--warmup", "2", "--epochs", "1", "--max-steps", "2"]
BROKEN = {
    "empty.mid": b"",
    "text.mid": b"not MIDI at all",
    "cut.mid": SOURCES["written"][:57],
    "zero-tracks.mid": header(tracks=0),
    "huge-track.mid": header() + track(NOTE, 0xFFFFFFF0),
    "lying-header.mid": header(tracks=9) + track(NOTE),
    "silent.mid": header() + track(bytes([0, 0xFF, 0x2F, 0])),
}


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    """Ten good songs and every kind of broken file, some in a subfolder, plus a folder named .mid."""
    folder = tmp_path_factory.mktemp("mixed")
    (folder / "sub").mkdir()
    (folder / "folder.mid").mkdir()
    for i in range(10):
        write_midi(folder / f"song{i}.mid", [Track("tune", melody(48, base=50 + i))])
    for i, (name, data) in enumerate(sorted(BROKEN.items())):
        (folder / ("sub" if i % 2 else ".") / name).write_bytes(data)
    return folder


def test_ingest_skips_and_counts_every_broken_file(mixed_folder, tmp_path):
    from livegen.train.data import find_files

    files = find_files([str(mixed_folder)])
    result = ingest(files, tmp_path / "cache", progress=False)
    assert len(result.pieces) == 10 and len(result.skipped) == len(BROKEN)
    reasons = {Path(f).name: r for f, r in result.skipped}
    assert set(reasons) == set(BROKEN)
    assert "truncated" in reasons["cut.mid"] and "no tracks" in reasons["zero-tracks.mid"]
    assert "contains no notes" in reasons["silent.mid"]
    again = ingest(files, tmp_path / "cache", progress=False)  # the errors are cached too
    assert again.skipped == result.skipped


def test_train_and_eval_skip_broken_files_and_still_work(mixed_folder, tmp_path):
    out = tmp_path / "model"
    code, printed, err = run_cli("train", "--data", mixed_folder, "--out", out, "--cache", tmp_path / "c", *TINY_TRAIN)
    assert code == 0, err
    assert f"{len(BROKEN)} skipped" in printed and "zero-tracks.mid" in printed
    assert json.loads((out / "config.json").read_text())["training"]["data"]["skipped"] == len(BROKEN)
    code, printed, err = run_cli("eval", out, "--data", mixed_folder, "--cache", tmp_path / "c", "--workers", "0",
                                 "--quiet", "--json", "--continuation-notes", "16")
    assert code == 0, err
    report = json.loads(printed)
    assert report["data"]["skipped_count"] == len(BROKEN) and report["pieces"] == 10
    assert {Path(s["file"]).name for s in report["data"]["skipped"]} == set(BROKEN)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    code, _, err = run_cli("eval", out, "--data", mixed_folder, "--cache", tmp_path / "c", "--workers", "0",
                           "--quiet", "--continuation-notes", "16", "--output", blocker / "report.json")
    assert code == 2 and "blocker" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli("train", "--data", mixed_folder, "--out", blocker, "--cache", tmp_path / "c", *TINY_TRAIN)
    assert code == 2 and "blocker" in err and "not a folder" in err, err


def test_train_and_eval_on_nothing_but_broken_files_name_one(tmp_path, model):
    folder = tmp_path / "broken"
    folder.mkdir()
    for name, data in BROKEN.items():
        (folder / name).write_bytes(data)
    code, _, err = run_cli("train", "--data", folder, "--out", tmp_path / "m", "--no-cache", *TINY_TRAIN)
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith(f"livegen train: error: none of the {len(BROKEN)} files gave a usable piece (e.g. {folder}/")
    code, _, err = run_cli("eval", model, "--data", folder / "cut.mid", "--no-cache", "--workers", "0", "--quiet")
    assert code == 2 and len(err.splitlines()) == 1
    assert f"(e.g. {folder / 'cut.mid'}: not a readable MIDI file (truncated" in err


def test_a_split_file_that_lies_is_a_clear_error(tmp_path, model):
    from livegen.errors import TrainingDataError
    from livegen.train.data import read_split

    for text in ("[1, 2]", '{"train": [1], "validation": [], "test": []}', "[" * 100_000, "\xff"):
        (model / "split.json").write_text(text, encoding="latin-1")
        with pytest.raises(TrainingDataError, match="split.json"):
            read_split(model)
        code, _, err = run_cli("eval", model, "--workers", "0", "--quiet")
        assert code == 2 and len(err.splitlines()) == 1 and "split.json" in err
    (model / "split.json").unlink()


# --- the real command line -----------------------------------------------------------------------


def livegen(*argv, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "livegen", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout)


def test_real_processes_exit_2_with_one_line_and_no_traceback(tmp_path, model):
    cut = tmp_path / "cut.mid"
    cut.write_bytes(SOURCES["demo"][:100])
    empty = tmp_path / "empty.mid"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.mid"
    folder.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "zero.mid").write_bytes(header(tracks=0))
    runs = [
        (["generate", cut, "-o", tmp_path / "o.mid", "--model", model], f"livegen generate: error: {cut}: not a readable MIDI file (truncated"),
        (["plot", folder, "-o", tmp_path / "o.png"], f"livegen plot: error: {folder}: is a directory"),
        (["render", empty, "-o", tmp_path / "o.wav"], f"livegen render: error: {empty}: not a readable MIDI file (empty file)"),
        (["train", "--data", broken, "--out", tmp_path / "m", "--no-cache", "--quiet"], "livegen train: error: none of the 1 files"),
        (["eval", model, "--data", broken, "--no-cache", "--quiet"], "livegen eval: error: none of the 1 evaluation files"),
    ]
    for argv, expected in runs:
        result = livegen(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(expected), (argv, result.stderr)
    assert not any((tmp_path / name).exists() for name in ("o.mid", "o.png", "o.wav"))
