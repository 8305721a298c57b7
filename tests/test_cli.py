import json
import subprocess
import sys

import numpy as np
import pretty_midi
import pytest

from factories import melody, tiny_model_dir, write_primer
from livegen.cli import build_parser, main
from livegen.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE
from livegen.notes import Note, Track, write_midi

DESIGN_SUBCOMMANDS = ["run", "demo", "ports", "presets", "generate", "render", "plot", "train", "eval", "bench"]


def test_help_lists_every_subcommand_of_the_design(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for name in DESIGN_SUBCOMMANDS:
        assert f"    {name} " in text
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(DESIGN_SUBCOMMANDS)


@pytest.fixture
def model_dir(tmp_path):
    return tiny_model_dir(tmp_path / "model")


@pytest.fixture
def primer(tmp_path):
    return write_primer(tmp_path / "primer.mid", melody(12))


def instruments_by_name(path):
    return {inst.name: inst for inst in pretty_midi.PrettyMIDI(str(path)).instruments}


def test_generate_writes_the_primer_and_the_requested_number_of_new_notes(tmp_path, model_dir, primer, capsys):
    out = tmp_path / "out" / "continuation.mid"
    code = main(["generate", str(primer), "-o", str(out), "--model", str(model_dir), "--length", "40", "--seed", "7"])
    assert code == 0
    assert "40 new notes after a 12-note primer" in capsys.readouterr().out
    tracks = instruments_by_name(out)
    assert set(tracks) == {"primer", "livegen"}
    assert len(tracks["primer"].notes) == 12
    new = sorted(tracks["livegen"].notes, key=lambda n: n.start)
    assert len(new) == 40
    assert new[0].start >= melody(12)[-1].start - 0.001
    assert all(21 <= n.pitch <= 108 and n.end > n.start for n in new)


def test_generate_is_deterministic_for_a_seed_and_can_write_only_the_continuation(tmp_path, model_dir, primer):
    def run(seed, *extra):
        out = tmp_path / f"out-{seed}-{len(extra)}.mid"
        args = ["generate", str(primer), "-o", str(out), "--model", str(model_dir), "--length", "30", "--seed", str(seed)]
        assert main(args + list(extra)) == 0
        return out

    assert run(1).read_bytes() == run(1, "--top-p", "1.0").read_bytes()
    assert run(1).read_bytes() != run(2).read_bytes()
    only = instruments_by_name(run(1, "--continuation-only"))
    assert list(only) == ["livegen"] and len(only["livegen"].notes) == 30


def test_generate_keeps_to_the_primers_span_with_a_full_register_prior(tmp_path, model_dir, primer):
    span = [n.pitch for n in melody(12)]

    def pitches(strength):
        out = tmp_path / f"r{strength}.mid"
        args = ["generate", str(primer), "-o", str(out), "--model", str(model_dir), "--length", "100",
                "--seed", "3", "--register-prior", strength, "--continuation-only"]
        assert main(args) == 0
        return [n.pitch for n in pretty_midi.PrettyMIDI(str(out)).instruments[0].notes]

    kept, free = pitches("1"), pitches("0")
    assert min(span) <= min(kept) and max(kept) <= max(span), kept
    assert min(free) < min(span) or max(free) > max(span), free  # the test model wanders without it


def test_temperature_raises_the_entropy_of_generated_pitches(tmp_path, model_dir, primer):
    def pitch_entropy(temperature):
        out = tmp_path / f"t{temperature}.mid"
        args = ["generate", str(primer), "-o", str(out), "--model", str(model_dir), "--length", "300",
                "--seed", "3", "--temperature", str(temperature), "--continuation-only"]
        assert main(args) == 0
        pitches = [n.pitch for n in pretty_midi.PrettyMIDI(str(out)).instruments[0].notes]
        _, counts = np.unique(pitches, return_counts=True)
        p = counts / counts.sum()
        return float(-(p * np.log(p)).sum())

    cold, warm, hot = pitch_entropy(0.3), pitch_entropy(1.0), pitch_entropy(2.0)
    assert cold < warm < hot


def test_generate_without_any_model_says_how_to_get_one(tmp_path, primer, capsys, monkeypatch):
    import livegen.model.checkpoint as checkpoint

    monkeypatch.setattr(checkpoint, "default_model_dir", lambda: (_ for _ in ()).throw(
        checkpoint.ModelError("no default model found (looked in x); pass --model PATH")))
    assert main(["generate", str(primer), "-o", str(tmp_path / "o.mid")]) == 2
    assert "no default model found" in capsys.readouterr().err


def test_out_of_range_flags_are_refused_with_the_allowed_range(primer, capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", str(primer), "-o", "x.mid", "--temperature", "11"])
    assert info.value.code == 2
    assert "outside the allowed range 0.0..10.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["run", "--learn", "--learn-timeout", "-1"])
    assert info.value.code == 2
    assert "--learn-timeout: -1.0 is outside the allowed range 0.1..600.0" in capsys.readouterr().err


def bad_inputs(tmp_path):
    """(name, primer, model folder) cases that must each fail with one line and exit code 2."""
    good_model = tiny_model_dir(tmp_path / "good")
    good_primer = write_primer(tmp_path / "good.mid", melody(64))
    truncated = tmp_path / "truncated.mid"
    truncated.write_bytes(good_primer.read_bytes()[:50])
    text = tmp_path / "text.mid"
    text.write_text("MThd? no, just a text file\n")
    empty = tmp_path / "empty.mid"
    write_midi(empty, [Track("silence", [])])
    corrupt = tiny_model_dir(tmp_path / "corrupt")
    (corrupt / WEIGHTS_FILE).write_bytes(b"\x00" * 7 + (corrupt / WEIGHTS_FILE).read_bytes()[7:200])
    mismatch = tiny_model_dir(tmp_path / "mismatch")
    config = json.loads((mismatch / CONFIG_FILE).read_text())
    config["config"]["layers"] = 3
    (mismatch / CONFIG_FILE).write_text(json.dumps(config))
    return [
        ("truncated MIDI", truncated, good_model, "truncated.mid: not a readable MIDI file"),
        ("text named .mid", text, good_model, "text.mid: not a readable MIDI file"),
        ("MIDI without notes", empty, good_model, "empty.mid: contains no notes"),
        ("corrupted safetensors", good_primer, corrupt, "not a valid safetensors file"),
        ("config/weights mismatch", good_primer, mismatch, "weights do not match the config"),
    ]


def test_bad_input_gives_one_clear_line_and_exit_code_2_through_the_real_cli(tmp_path):
    for name, primer, model, expected in bad_inputs(tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "livegen", "generate", str(primer), "-o", str(tmp_path / "o.mid"), "--model", str(model)],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 2, (name, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line and "warnings.warn" not in line]
        assert len(lines) == 1, (name, result.stderr)
        assert lines[0].startswith("livegen generate: error: ") and expected in lines[0], (name, lines[0])
        assert "Traceback" not in result.stderr
        assert not (tmp_path / "o.mid").exists()


def test_the_command_line_runs_numpy_blas_on_one_thread():
    """numpy's OpenBLAS with two threads costs the lean step milliseconds whenever another process
    holds a core (livegen/cli.py): the entry point must set one thread before numpy loads."""
    import os

    probe = (
        "import os, ctypes, livegen.cli, numpy\n"
        "libs = {l.split()[-1] for l in open('/proc/self/maps') if 'openblas' in l}\n"
        "lib = ctypes.CDLL(libs.pop()) if libs else None\n"
        "get = lib and next((getattr(lib, n) for n in ('scipy_openblas_get_num_threads64_', "
        "'openblas_get_num_threads64_', 'openblas_get_num_threads') if hasattr(lib, n)), None)\n"
        "print(os.environ['OPENBLAS_NUM_THREADS'], get() if get else 'unknown')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True).stdout.split()
    assert out[0] == "1"
    if out[1] == "unknown":
        pytest.skip("numpy's OpenBLAS does not say its thread count here")
    assert out[1] == "1"
