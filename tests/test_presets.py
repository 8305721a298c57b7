"""Presets: loading, validation errors (file, key, value, range), flags over presets, the CLI."""

import argparse
from pathlib import Path

import pytest

from livegen import presets
from livegen.cli import build_parser, main
from livegen.daemon import resolve_preset, session_config
from livegen.engine.session import MODES, SessionConfig
from livegen.errors import PresetError

SHIPPED = sorted(p.stem for p in presets.SHIPPED_DIR.glob("*.toml"))


def test_at_least_five_shipped_presets_with_descriptions():
    assert len(SHIPPED) >= 5
    for name in SHIPPED:
        preset = presets.load(name)
        assert preset.name == name and len(preset.description) > 40


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_preset_loads_and_round_trips(name, tmp_path):
    preset = presets.load(name)
    config = session_config(preset)
    assert config.name == name
    copy = presets.load(str(presets.save(preset, tmp_path / f"{name}.toml")))
    assert copy.to_dict() == preset.to_dict()
    for each in presets.load_switch_list(preset):
        session_config(each)


def test_the_default_preset_is_the_old_default_session():
    parser = build_parser()
    args = parser.parse_args(["run"])
    assert session_config(resolve_preset(args), passthrough_channel=1) == SessionConfig()
    assert presets.load("default").to_dict() | {"description": ""} == presets.Preset().to_dict()
    assert presets.MODES == MODES


def test_flags_override_the_preset():
    args = build_parser().parse_args(["run", "--preset", "ballad", "--temperature", "1.3", "--gap-ms", "200"])
    config = session_config(resolve_preset(args))
    assert config.sampling.temperature == 1.3 and config.gap_s == 0.2
    assert config.length == 12 and config.sampling.pitch_low == 48  # the rest from the preset


def write(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("text, key, allowed", [
    ("[sampling]\ntemperature = 11.0\n", "sampling.temperature", "0.0..10.0"),
    ("[sampling]\ntemprature = 1.0\n", "sampling.temprature", "known keys: temperature, top_p"),
    ("[sampling]\ntemperature = \"hot\"\n", "sampling.temperature", "0.0..10.0"),
    ("[response]\nlength = 2.5\n", "response.length", "1..4096"),
    ("[response]\nquantize = \"1/5\"\n", "response.quantize", "1/16"),
    ("[output]\nchannel = 17\n", "output.channel", "1..16"),
    ("[output]\nsynth = 1\n", "output.synth", "true or false"),
    ("mode = \"jazz\"\n", "mode", "call-response, overlap, mirror"),
    ("[controls]\npanic = 200\n", "controls.panic", "-1..127"),
    ("[controls]\npanic = 64\n", "controls.panic", "sustain"),
    ("[controls]\npanic = 20\nmute = 20\n", "controls.mute", "already used"),
    ("[listen]\nchannels = [1, 20]\n", "listen.channels[1]", "1..16"),
    ("[sampling]\npitch_low = 80\npitch_high = 60\n", "sampling.pitch_low", "pitch_high"),
    ("model = \"no/such/model\"\n", "model", "no such model folder"),
    ("sampling = 3\n", "sampling", "table"),
])
def test_validation_errors_name_file_key_value_and_range(tmp_path, text, key, allowed):
    path = write(tmp_path, text)
    with pytest.raises(PresetError) as info:
        presets.load(path)
    message = str(info.value)
    assert path in message and key in message and allowed in message


def test_model_paths_are_relative_to_the_preset_file(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "sets").mkdir()
    path = write(tmp_path / "sets", 'model = "../models/mine"\n', "mine.toml")
    assert presets.load(path).model == str((tmp_path / "models" / "mine").resolve())


def test_unknown_name_lists_presets(monkeypatch, tmp_path):
    monkeypatch.setenv("LIVEGEN_PRESETS", str(tmp_path))
    with pytest.raises(PresetError, match="no preset named 'nope'.*ballad"):
        presets.load("nope")


def test_user_folder_shadows_shipped(monkeypatch, tmp_path):
    monkeypatch.setenv("LIVEGEN_PRESETS", str(tmp_path))
    (tmp_path / "wild.toml").write_text('description = "mine"\n')
    assert presets.load("wild").description == "mine"


def test_cli_lists_and_shows_presets(capsys, tmp_path):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED:
        assert f"{name}  (" in out
    assert main(["presets", "show", "wild"]) == 0
    shown = capsys.readouterr().out
    assert "temperature = 1.6" in shown and "latency_ms = 0.0" in shown  # defaults included
    assert main(["presets", "show", write(tmp_path, "[output]\nchannel = 0\n")]) == 2
    assert "output.channel = 0" in capsys.readouterr().err
