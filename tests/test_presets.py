"""Presets: loading, validation errors (file, key, value, range), flags over presets, the CLI.

The bad-value cases are generated from the dataclass tree in livegen.presets (types and range /
choices metadata), so a new key is covered by adding it there.
"""

import argparse
import math
import tomllib
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
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


# --- every key, every kind of bad value, generated from the dataclasses ---------------------------


def leaf_keys():
    """(dotted key, type, metadata) of every key a preset file may set."""
    def walk(cls, prefix):
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if f.metadata.get("internal"):
                continue
            if is_dataclass(hints[f.name]):
                yield from walk(hints[f.name], f"{prefix}{f.name}.")
            else:
                yield f"{prefix}{f.name}", hints[f.name], f.metadata
    return list(walk(presets.Preset, ""))


LEAVES = leaf_keys()
WRONG_TYPES = {  # TOML literal -> the types it is NOT (TOML's true is not an integer)
    '"text"': {int, float, bool, list},
    "1.5": {int, bool, str, list},
    "true": {int, float, str, list},
    "7": {bool, str, list},
    "[1]": {int, float, bool, str},
    "{ a = 1 }": {int, float, bool, str, list},
    "1979-05-27": {int, float, bool, str, list},
}


def toml_for(key, literal):
    *section, name = key.split(".")
    return (f"[{section[0]}]\n" if section else "") + f"{name} = {literal}\n"


def allowed_text(kind, meta):
    if "range" in meta:
        return "{}..{}".format(*meta["range"])
    if "choices" in meta:
        return ", ".join(meta["choices"])
    return {bool: "true or false", str: "string"}.get(kind, "list of strings")


def bad_values():
    """(key, TOML literal, fragment the error must contain) for every key."""
    cases = []
    for key, kind, meta in LEAVES:
        base = typing.get_origin(kind) or kind
        item = typing.get_args(kind)[0] if base is list else None
        allowed = allowed_text(item or kind, meta)
        for literal, not_for in WRONG_TYPES.items():
            if base in not_for:
                cases.append((key, literal, allowed))
        if "range" in meta:
            low, high = meta["range"]
            numeric = item or kind
            below, above = (low - 1, high + 1) if numeric is int else (low - 0.5, high + 0.5)
            outside = [repr(below), repr(above)]
            if numeric is int:
                outside += ["99999999999999999999999999", "-99999999999999999999999999"]
            else:
                outside += ["nan", "inf", "-inf", "1e400", "99999999999999999999999999"]
            for literal in outside:
                cases.append((key, f"[{literal}]" if item else literal, allowed))
            if item:
                cases += [(key, '["a"]', allowed), (key, "[true]", allowed), (key, "[1.5]", allowed)]
        if "choices" in meta:
            cases += [(key, '"nope"', allowed), (key, '""', allowed), (key, '"OFF "', allowed)]
        if base is str and "choices" not in meta:
            cases.append((key, '"bell\\u0007 or escape \\u001b[31m"', "control character"))
        if item is str:
            cases += [(key, "[1]", "string"), (key, '["\\u001b[2J"]', "control character")]
    return cases


@pytest.mark.parametrize("key, literal, fragment", bad_values(), ids=lambda v: str(v)[:30])
def test_every_key_refuses_every_kind_of_bad_value(tmp_path, key, literal, fragment):
    path = write(tmp_path, toml_for(key, literal))
    value = tomllib.loads(f"v = {literal}")["v"]
    with pytest.raises(PresetError) as info:
        presets.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {key}"), message  # file, then the key (or key[index])
    shown = value[0] if isinstance(value, list) and f"{key}[0]" in message else value
    assert repr(shown) in message, message
    assert fragment in message, message


@pytest.mark.parametrize("section", [None, "sampling", "response", "listen", "output", "controls"])
def test_unknown_keys_in_every_section_list_the_known_ones(tmp_path, section):
    cls = presets.Preset if section is None else typing.get_type_hints(presets.Preset)[section]
    known = [f.name for f in fields(cls) if not f.metadata.get("internal")]
    path = write(tmp_path, toml_for(f"{section}.colour" if section else "colour", '"red"'))
    with pytest.raises(PresetError) as info:
        presets.load(path)
    key = f"{section}.colour" if section else "colour"
    assert str(info.value) == f"{path}: {key} = 'red': unknown key; known keys: {', '.join(known)}"


def test_every_key_is_covered_by_a_bad_value_and_the_readme_table():
    covered = {key for key, _, _ in bad_values()}
    assert covered == {key for key, _, _ in LEAVES}
    table = presets.reference_table()
    for key, _, _ in LEAVES:
        *section, name = key.split(".")
        assert f"`{'[' + section[0] + '] ' if section else ''}{name}`" in table


CROSS_KEY = [
    ("[sampling]\npitch_low = 100\npitch_high = 40\n", "sampling.pitch_low", "sampling.pitch_high (40)"),
    ("[controls]\ntemperature_min = 3.0\ntemperature_max = 1.0\n", "controls.temperature_min", "temperature_max"),
    ("[controls]\nlength_min = 100\n", "controls.length_min", "controls.length_max (64)"),
    ("[controls]\ngap_min_ms = 5000.0\ngap_max_ms = 100.0\n", "controls.gap_min_ms", "gap_max_ms"),
    ("[controls]\nstate_out = 64\n", "controls.state_out", "sustain pedal"),
    ("[controls]\nstate_out = 123\n", "controls.state_out", "-1..119"),
    ("[controls]\ngap = 30\nmode = 30\n", "controls.mode", "already used by controls.gap"),
    ('name = "../../elsewhere/x"\n', "name", "no / or"),
    ('name = ""\n', "name", "not empty"),
    ('name = ".."\n', "name", "not . or .."),
] + [(f"[controls]\n{name} = 64\n", f"controls.{name}", "sustain pedal")
     for name in ("temperature", "length", "gap", "mode", "panic", "end_call", "mute")]


@pytest.mark.parametrize("text, key, fragment", CROSS_KEY)
def test_rules_between_keys(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(PresetError) as info:
        presets.load(path)
    assert str(info.value).startswith(f"{path}: {key} = ") and fragment in str(info.value)


def test_edges_of_every_range_are_allowed(tmp_path):
    """Both ends of every range load (min <= max rules kept by moving the partner too)."""
    for end in (0, 1):
        for key, kind, meta in LEAVES:
            if "range" not in meta or key == "controls.state_out" and end == 1:
                continue
            value = meta["range"][end]
            item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
            literal = f"[{value!r}]" if item else repr(value)
            if key.startswith("controls.") and value == 64 and key != "controls.channel":
                continue
            text = toml_for(key, literal)
            partner = {"sampling.pitch_low": "pitch_high", "sampling.pitch_high": "pitch_low",
                       "controls.temperature_min": "temperature_max", "controls.length_min": "length_max",
                       "controls.gap_min_ms": "gap_max_ms", "controls.temperature_max": "temperature_min",
                       "controls.length_max": "length_min", "controls.gap_max_ms": "gap_min_ms"}.get(key)
            if partner:
                text += f"{partner} = {literal}\n"
            loaded = presets.load(write(tmp_path, text))
            section, _, name = key.rpartition(".")
            got = getattr(getattr(loaded, section) if section else loaded, name)
            assert got == ([value] if item else value) and type(got[0] if item else got) is (item or kind)


@pytest.mark.parametrize("content, fragment", [
    (b"[sampling\ntemperature = 1\n", "not valid TOML"),
    (b"temperature = = 1\n", "not valid TOML"),
    (b"[sampling]\ntemperature = 1\n[sampling]\ntop_p = 0.5\n", "not valid TOML"),
    (b"description = \"caf\xe9\"\n", "not UTF-8 text (byte 18)"),
    (b"\xff\xfe[\x00s\x00", "not UTF-8 text"),
    (b"\x00\x01\x02", "not valid TOML"),
    (b"[[sampling]]\ntemperature = 1.0\n", "expected a table"),
    (b"[sampling.deep]\nx = 1\n", "sampling.deep"),
])
def test_files_that_are_not_valid_toml(tmp_path, content, fragment):
    path = tmp_path / "broken.toml"
    path.write_bytes(content)
    with pytest.raises(PresetError) as info:
        presets.load(str(path))
    assert str(info.value).startswith(f"{path}: ") and fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_an_empty_file_is_the_defaults_named_after_the_file(tmp_path):
    loaded = presets.load(write(tmp_path, "", "quiet.toml"))
    assert loaded.to_dict() == presets.Preset(name="quiet").to_dict()


def test_directories_and_missing_files(tmp_path, monkeypatch):
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(PresetError, match="folder.toml: is a directory, not a preset file"):
        presets.load(str(folder))
    with pytest.raises(PresetError, match="nothing.toml: no such preset file"):
        presets.load(str(tmp_path / "nothing.toml"))
    monkeypatch.setenv("LIVEGEN_PRESETS", str(tmp_path))
    with pytest.raises(PresetError, match="no preset named 'folder'"):
        presets.load("folder")  # a folder named like a preset is no preset


def test_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path, "[sampling]\ntemperature = 1.0\n")

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(PresetError, match=r"bad.toml: cannot read \(Permission denied\)"):
        presets.load(path)


def test_model_key_must_name_a_model_folder(tmp_path, monkeypatch):
    (tmp_path / "models" / "empty").mkdir(parents=True)
    (tmp_path / "models" / "file").write_text("x")
    (tmp_path / "home" / "m").mkdir(parents=True)
    (tmp_path / "home" / "m" / "config.json").write_text("{}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for value, fragment in [("models/empty", "has no config.json"), ("models/file", "not a folder"),
                            ("models/none", "no such model folder")]:
        with pytest.raises(PresetError) as info:
            presets.load(write(tmp_path, f'model = "{value}"\n'))
        assert f"model = '{value}': " in str(info.value) and fragment in str(info.value)
    assert presets.load(write(tmp_path, 'model = "~/m"\n')).model == str((tmp_path / "home" / "m").resolve())


def test_switch_paths_are_relative_to_the_preset_and_checked_at_load(tmp_path):
    (tmp_path / "sets").mkdir()
    write(tmp_path / "sets", 'description = "b"\n', "b.toml")
    path = write(tmp_path / "sets", '[controls]\nswitch = ["ballad", "./b.toml"]\n', "a.toml")
    loaded = presets.load(path)
    assert [p.name for p in presets.load_switch_list(loaded)] == ["ballad", "b"]
    path = write(tmp_path / "sets", '[controls]\nswitch = ["ballad", "./missing.toml"]\n', "c.toml")
    with pytest.raises(PresetError, match=r"c.toml: controls.switch\[1\] = './missing.toml': no such preset file"):
        presets.load(path)
    path = write(tmp_path / "sets", '[controls]\nswitch = ["nosuchname"]\n', "d.toml")
    with pytest.raises(PresetError, match=r"controls.switch\[0\] = 'nosuchname': not a preset"):
        presets.load(path)


def test_the_cli_gives_one_line_and_exit_2_for_a_bad_preset(tmp_path, capsys):
    path = write(tmp_path, "[output]\nprogram = 128\n")
    assert main(["presets", "show", path]) == 2
    err = capsys.readouterr().err
    assert err == f"livegen presets: error: {path}: output.program = 128: out of range, allowed 0..127\n"
    assert main(["run", "--preset", path, "--no-synth"]) == 2  # refused before any port opens
    assert "output.program = 128" in capsys.readouterr().err


# --- hypothesis: any document loads or is refused with a PresetError; saving round-trips ----------

SCALARS = st.one_of(
    st.integers(-300, 20_000), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=8), st.lists(st.integers(-2, 20), max_size=3), st.lists(st.text(max_size=4), max_size=2),
)


@st.composite
def documents(draw):
    data = {}
    for key, _, _ in draw(st.lists(st.sampled_from(LEAVES), max_size=8, unique_by=lambda leaf: leaf[0])):
        *section, name = key.split(".")
        table = data.setdefault(section[0], {}) if section else data
        table[name] = draw(SCALARS)
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents())
def test_any_document_loads_or_is_refused_with_a_preset_error(data):
    try:
        preset = presets.preset_from_dict(data, "<fuzz>")
    except PresetError as exc:
        assert str(exc).startswith("<fuzz>: ") and "\n" not in str(exc)
        return
    text = presets.dumps(preset)  # what MIDI learn writes back must load back the same
    again = presets.preset_from_dict(tomllib.loads(text), "<again>")
    assert again.to_dict() == preset.to_dict()
    for value in (preset.sampling.temperature, preset.listen.gap_ms, preset.controls.gap_max_ms):
        assert math.isfinite(value)


@settings(max_examples=100, deadline=None)
@given(content=st.binary(max_size=64))
def test_any_bytes_load_or_are_refused_with_a_preset_error(content, tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / "fuzz.toml"
    path.write_bytes(content)
    try:
        presets.load(str(path))
    except PresetError as exc:
        assert str(exc).startswith(f"{path}: ")
