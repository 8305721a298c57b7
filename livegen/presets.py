"""Presets: one dataclass tree, loaded from TOML and validated, overridden by CLI flags.

A preset file has optional top-level ``name``/``description``/``model``/``mode`` and the
sections ``[sampling]``, ``[response]``, ``[listen]``, ``[output]``, ``[controls]``.  Every key
is optional: what a file leaves out keeps the built-in default, which is what ``livegen run``
does without ``--preset`` (DESIGN.md's default timing: the first answer note is due at the gap
end).  Unknown keys, wrong types and out-of-range values raise ``PresetError`` naming the file,
the key, the value and what is allowed.  ``model`` is resolved relative to the preset file.

Where presets are found, by name: the user folder (``platformdirs.user_config_dir('livegen')/
presets``, which shadows shipped presets of the same name), then the shipped ``presets/``
folder.  Anything with a ``/`` or ending in ``.toml`` is a path.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
import unicodedata
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from livegen.errors import PresetError
from livegen.model.key_prior import DEFAULT_STRENGTH
from livegen.model.params import DEFAULT_RHYTHM_TEMPERATURE
from livegen.model.register_prior import DEFAULT_STRENGTH as DEFAULT_REGISTER_STRENGTH
from livegen.shipped import shipped_dir

MODES = ("call-response", "overlap", "mirror", "harmonize")
PLACEMENTS = ("below", "above", "around")  # livegen.engine.harmonize.PLACEMENTS
QUANTIZE = ("off", "1/4", "1/8", "1/8t", "1/16", "1/16t", "1/32")
SHIPPED_DIR = shipped_dir("presets")
DEFAULT_NAME = "default"
MODEL_CONFIG = "config.json"  # livegen.model.checkpoint.CONFIG_FILE, named here without importing torch


def _range(low: float, high: float, doc: str) -> dict:
    return {"range": (low, high), "doc": doc}


def _choice(choices: tuple, doc: str) -> dict:
    return {"choices": choices, "doc": doc}


def _doc(doc: str) -> dict:
    return {"doc": doc}


@dataclass
class Sampling:
    temperature: float = field(default=1.0, metadata=_range(0.0, 10.0, "0 = most likely notes, 1 = as trained, >1 wilder"))
    top_p: float = field(default=1.0, metadata=_range(0.01, 1.0, "nucleus sampling mass (1 = off)"))
    pitch_low: int = field(default=21, metadata=_range(0, 127, "lowest pitch the answer may use"))
    pitch_high: int = field(default=108, metadata=_range(0, 127, "highest pitch the answer may use"))
    key_prior: float = field(default=DEFAULT_STRENGTH, metadata=_range(0.0, 1.0, "how much less likely a pitch outside the key you are playing in is (0 = the model as trained, 1 = never)"))
    register_prior: float = field(default=DEFAULT_REGISTER_STRENGTH, metadata=_range(0.0, 1.0, "how much less likely a pitch an octave beyond the span you are playing in is (0 = the model as trained, 1 = never beyond it)"))
    rhythm_temperature: float = field(default=DEFAULT_RHYTHM_TEMPERATURE, metadata=_range(0.0, 2.0, "the steps and note lengths sample at temperature x this (1 = as the pitches; lower = tidier rhythm)"))


@dataclass
class Response:
    length: int = field(default=32, metadata=_range(1, 4096, "notes in an answer"))
    max_seconds: float = field(default=20.0, metadata=_range(0.5, 600.0, "longest answer in seconds"))
    velocity_scale: float = field(default=1.0, metadata=_range(0.05, 4.0, "multiplies the sampled velocities"))
    latency_ms: float = field(default=0.0, metadata=_range(-200.0, 500.0, "shifts every answer note (compensate output latency with a negative value)"))
    quantize: str = field(default="off", metadata=_choice(QUANTIZE, "snap answer onsets to this grid (MIDI clock, else the phrase's tempo)"))


@dataclass
class Listen:
    gap_ms: float = field(default=500.0, metadata=_range(20.0, 10_000.0, "silence that ends a phrase"))
    gap_beats: float = field(default=0.0, metadata=_range(0.0, 64.0, "gap in beats when the tempo is known (0 = use gap_ms)"))
    min_notes: int = field(default=1, metadata=_range(1, 1000, "notes a phrase needs before it is answered"))
    max_listen: float = field(default=30.0, metadata=_range(0.0, 3600.0, "answer after this many seconds of playing (0 = never)"))
    adaptive_gap: bool = field(default=False, metadata=_doc("scale the gap to the player's inter-onset intervals"))
    channels: list[int] = field(default_factory=list, metadata=_range(1, 16, "MIDI channels listened to (empty = all)"))


@dataclass
class Output:
    channel: int = field(default=1, metadata=_range(1, 16, "MIDI channel of the answer"))
    program: int = field(default=0, metadata=_range(0, 127, "GM program of the answer"))
    passthrough: bool = field(default=False, metadata=_doc("echo the player's notes to the MIDI output"))
    synth: bool = field(default=True, metadata=_doc("play through the built-in FluidSynth synth"))
    synth_passthrough: bool = field(default=True, metadata=_doc("play the player's notes on the synth too"))


CC = _range(-1, 127, "controller number (-1 = none)")


@dataclass
class Controls:
    channel: int = field(default=0, metadata=_range(0, 16, "channel the controls listen on (0 = any)"))
    temperature: int = field(default=-1, metadata=CC)
    length: int = field(default=-1, metadata=CC)
    gap: int = field(default=-1, metadata=CC)
    mode: int = field(default=-1, metadata=CC)
    panic: int = field(default=-1, metadata=CC)
    end_call: int = field(default=-1, metadata=CC)
    mute: int = field(default=-1, metadata=CC)
    memory: int = field(default=-1, metadata=CC)
    memory_reset: int = field(default=-1, metadata=CC)
    state_out: int = field(default=-1, metadata=_range(-1, 119, "CC sent on the answer channel: 0 idle, 64 listening, 127 playing (-1 = off; not 64, the pedal, nor 120..127, channel mode)"))
    temperature_min: float = field(default=0.1, metadata=_range(0.0, 10.0, "temperature at knob value 0"))
    temperature_max: float = field(default=2.0, metadata=_range(0.0, 10.0, "temperature at knob value 127"))
    length_min: int = field(default=1, metadata=_range(1, 4096, "answer notes at knob value 0"))
    length_max: int = field(default=64, metadata=_range(1, 4096, "answer notes at knob value 127"))
    gap_min_ms: float = field(default=100.0, metadata=_range(20.0, 10_000.0, "gap at knob value 0"))
    gap_max_ms: float = field(default=2000.0, metadata=_range(20.0, 10_000.0, "gap at knob value 127"))
    memory_min: float = field(default=0.0, metadata=_range(0.0, 1.0, "memory weight at knob value 0"))
    memory_max: float = field(default=1.0, metadata=_range(0.0, 1.0, "memory weight at knob value 127"))
    switch: list[str] = field(default_factory=list, metadata=_doc("presets that program change 0, 1, 2... switch to"))


@dataclass
class Preset:
    name: str = field(default=DEFAULT_NAME, metadata=_doc("preset name"))
    description: str = field(default="", metadata=_doc("what it sounds like and why"))
    model: str = field(default="", metadata=_doc("model folder, relative to the preset file (empty = the default model)"))
    mode: str = field(default="call-response", metadata=_choice(MODES, "call-response, overlap, mirror or harmonize"))
    voices: int = field(default=3, metadata=_range(1, 8, "harmonize mode: voices added to each note played"))
    harmonize: str = field(default="below", metadata=_choice(PLACEMENTS, "harmonize mode: the voices go below, above or around the melody"))
    memory: float = field(default=0.0, metadata=_range(0.0, 1.0, "weight of the session memory: 0 = the model alone, 1 = only what you played this session"))
    memory_reset: bool = field(default=False, metadata=_doc("choosing this preset clears the session memory"))
    sampling: Sampling = field(default_factory=Sampling)
    response: Response = field(default_factory=Response)
    listen: Listen = field(default_factory=Listen)
    output: Output = field(default_factory=Output)
    controls: Controls = field(default_factory=Controls)
    path: Path | None = field(default=None, metadata={"internal": True})

    def cc(self, name: str) -> int | None:
        value = getattr(self.controls, name)
        return None if value < 0 else value

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("path")
        return out


# --- validation ------------------------------------------------------------------------------


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fail(path: object, key: str, value: object, allowed: str) -> PresetError:
    return PresetError(f"{path}: {key} = {value!r}: {allowed}")


def _check_scalar(path: object, key: str, value: object, kind: type, meta: dict) -> object:
    """``value`` checked against its field's type and metadata (TOML's true is not an integer,
    nan and inf are out of every range)."""
    if kind is bool:
        if not isinstance(value, bool):
            raise _fail(path, key, value, "expected true or false")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(path, key, value, f"expected an integer in {_describe(meta)}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, key, value, f"expected a number in {_describe(meta)}")
    elif kind is str:
        if not isinstance(value, str):
            raise _fail(path, key, value, f"expected a string{' in ' + _describe(meta) if 'choices' in meta else ''}")
        bad = next((c for c in value if _is_control(c)), None)
        if bad is not None:
            raise _fail(path, key, value, f"control character {bad!r} not allowed in a string")
    if "range" in meta:
        low, high = meta["range"]
        if not low <= value <= high:  # False for nan; compared before float() so 10**400 cannot overflow
            raise _fail(path, key, value, f"out of range, allowed {low}..{high}")
    if "choices" in meta and value not in meta["choices"]:
        raise _fail(path, key, value, f"allowed: {', '.join(meta['choices'])}")
    return float(value) if kind is float else value


def _is_control(char: str) -> bool:
    """Terminal control characters (escape sequences...); tab and newline are text."""
    return unicodedata.category(char) == "Cc" and char not in "\t\n"


def _describe(meta: dict) -> str:
    if "range" in meta:
        return "{}..{}".format(*meta["range"])
    if "choices" in meta:
        return ", ".join(meta["choices"])
    return "any"


def _build(cls: type, data: dict, path: object, prefix: str = "", base: object | None = None) -> object:
    """A ``cls`` from ``data`` (a TOML table), starting from ``base`` (defaults when None)."""
    if not isinstance(data, dict):
        raise _fail(path, prefix.rstrip(".") or "(file)", data, "expected a table")
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls) if not f.metadata.get("internal")}
    values = {} if base is None else {name: getattr(base, name) for name in known}
    for key, value in data.items():
        full = prefix + key
        if key not in known:
            raise _fail(path, full, value, f"unknown key; known keys: {', '.join(known)}")
        kind, meta = hints[key], known[key].metadata
        if dataclasses.is_dataclass(kind):
            values[key] = _build(kind, value, path, full + ".", values.get(key))
        elif typing.get_origin(kind) is list:
            (item,) = typing.get_args(kind)
            if not isinstance(value, list):
                what = {int: "integers", str: "strings", float: "numbers"}.get(item, item.__name__)
                allowed = f" in {_describe(meta)}" if "range" in meta or "choices" in meta else ""
                raise _fail(path, full, value, f"expected a list of {what}{allowed}")
            values[key] = [_check_scalar(path, f"{full}[{i}]", v, item, meta) for i, v in enumerate(value)]
        else:
            values[key] = _check_scalar(path, full, value, kind, meta)
    return cls(**values)


SUSTAIN_CC = 64
CONTROL_NAMES = ("temperature", "length", "gap", "mode", "panic", "end_call", "mute", "memory", "memory_reset")


def _check_consistency(preset: Preset, path: object) -> None:
    """Rules between keys, and values a range cannot say (a name that is a path, CC 64)."""
    name = preset.name
    if not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
        raise _fail(path, "name", name, "a preset name: not empty, no / or \\, not . or ..")
    s, c = preset.sampling, preset.controls
    if c.state_out == SUSTAIN_CC:
        raise _fail(path, "controls.state_out", c.state_out, "64 is the sustain pedal (it would hold every note); allowed -1..119 except 64")
    if s.pitch_low > s.pitch_high:
        raise _fail(path, "sampling.pitch_low", s.pitch_low, f"must be <= sampling.pitch_high ({s.pitch_high})")
    for low, high in (("temperature_min", "temperature_max"), ("length_min", "length_max"), ("gap_min_ms", "gap_max_ms"),
                      ("memory_min", "memory_max")):
        if getattr(c, low) > getattr(c, high):
            raise _fail(path, f"controls.{low}", getattr(c, low), f"must be <= controls.{high} ({getattr(c, high)})")
    for name in CONTROL_NAMES:
        if getattr(c, name) == 64:
            raise _fail(path, f"controls.{name}", 64, "64 is the sustain pedal; allowed -1..127 except 64")
    used = [(getattr(c, n), n) for n in CONTROL_NAMES if getattr(c, n) >= 0]
    seen: dict[int, str] = {}
    for number, name in used:
        if number in seen:
            raise _fail(path, f"controls.{name}", number, f"already used by controls.{seen[number]}; each control needs its own CC")
        seen[number] = name


def preset_from_dict(data: dict, path: object = "<preset>", base: Preset | None = None) -> Preset:
    preset = _build(Preset, data, path, base=base)
    assert isinstance(preset, Preset)
    _check_consistency(preset, path)
    return preset


# --- finding and loading ---------------------------------------------------------------------


def user_dir() -> Path:
    override = os.environ.get("LIVEGEN_PRESETS")
    if override:
        return Path(override)
    import platformdirs

    return Path(platformdirs.user_config_dir("livegen")) / "presets"


def search_path() -> list[Path]:
    return [user_dir(), SHIPPED_DIR]


def is_path(spec: str) -> bool:
    return "/" in spec or os.sep in spec or spec.endswith(".toml") or spec.startswith("~")


def find(spec: str) -> Path:
    """The file of a preset name or path; PresetError listing what exists if none."""
    if is_path(spec):
        path = Path(spec).expanduser()
        if path.is_dir():
            raise PresetError(f"{path}: is a directory, not a preset file")
        if not path.is_file():
            raise PresetError(f"{path}: no such preset file")
        return path
    for folder in search_path():
        candidate = folder / f"{spec}.toml"
        if candidate.is_file():
            return candidate
    names = ", ".join(sorted(available())) or "(none)"
    raise PresetError(f"no preset named {spec!r} (looked in {', '.join(str(p) for p in search_path())}); presets: {names}")


def available() -> dict[str, Path]:
    """Every preset name found, user folder first (shadowing shipped ones)."""
    found: dict[str, Path] = {}
    for folder in search_path():
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def load(spec: str | os.PathLike | None) -> Preset:
    """The validated preset for a name or path; None gives the built-in defaults."""
    if spec is None:
        return Preset()
    path = find(str(spec))
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise PresetError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise PresetError(f"{path}: not UTF-8 text (byte {exc.start}); a preset is a UTF-8 TOML file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PresetError(f"{path}: not valid TOML ({exc})") from exc
    data.setdefault("name", path.stem)
    preset = preset_from_dict(data, path)
    preset.path = path.resolve()
    if preset.model:
        preset.model = str(_model_folder(path, preset.model, preset.path.parent))
    for index, name in enumerate(preset.controls.switch):
        key = f"controls.switch[{index}]"
        if is_path(name):
            target = _relative_to(preset.path.parent, name)
            if not target.is_file():
                raise _fail(path, key, name, f"no such preset file ({target})")
        elif name not in available():
            raise _fail(path, key, name, f"not a preset; presets: {', '.join(sorted(available()))}")
    return preset


def _relative_to(folder: Path, name: str) -> Path:
    """A path from a preset: ``~`` expanded, relative paths taken from the preset's folder."""
    target = Path(name).expanduser()
    return target if target.is_absolute() else folder / target


def _model_folder(path: Path, value: str, folder: Path) -> Path:
    """The preset's ``model``, resolved from its folder and checked to be a model folder."""
    model = _relative_to(folder, value)
    if not model.exists():
        raise _fail(path, "model", value, f"no such model folder ({model})")
    if not model.is_dir():
        raise _fail(path, "model", value, f"not a folder ({model}); a model folder holds {MODEL_CONFIG}")
    if not (model / MODEL_CONFIG).is_file():
        raise _fail(path, "model", value, f"not a model folder ({model} has no {MODEL_CONFIG})")
    return model.resolve()


def load_switch_list(preset: Preset) -> list[Preset]:
    """The presets program change 0, 1, 2... switch to (paths relative to the preset file)."""
    out = []
    for name in preset.controls.switch:
        if is_path(name) and preset.path is not None:
            name = str(_relative_to(preset.path.parent, name))
        out.append(preset if name == preset.name else load(name))
    return out


# --- writing (MIDI learn) --------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped, so any text
    (a multi-line description) survives a rewrite by MIDI learn."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t"}
    return '"' + "".join(
        escapes.get(c) or (f"\\u{ord(c):04x}" if unicodedata.category(c) == "Cc" else c) for c in text
    ) + '"'


def dumps(preset: Preset) -> str:
    """The whole resolved preset as TOML (loads back to an equal preset)."""
    data = preset.to_dict()
    lines = []
    tables = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


def save(preset: Preset, path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(preset), encoding="utf-8")
    except OSError as exc:
        raise PresetError(f"{path}: cannot write ({exc.strerror or exc})") from exc
    return path


def summary(preset: Preset) -> str:
    s, r, li, o = preset.sampling, preset.response, preset.listen, preset.output
    gap = f"{li.gap_beats:g} beats" if li.gap_beats else f"{li.gap_ms:g} ms"
    return (f"{preset.mode}, T {s.temperature:g}, top-p {s.top_p:g}, {r.length} notes, gap {gap}, "
            f"pitch {s.pitch_low}-{s.pitch_high}, ch {o.channel} prog {o.program}"
            f"{', quantize ' + r.quantize if r.quantize != 'off' else ''}{'' if o.synth else ', no synth'}")


def reference_table() -> str:
    """Markdown table of every key (for the README): key, meaning, range, default."""
    rows = ["| key | meaning | range | default |", "| --- | --- | --- | --- |"]

    def walk(cls: type, obj: object, prefix: str) -> None:
        hints = _hints(cls)
        for f in fields(cls):
            if f.metadata.get("internal"):
                continue
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, getattr(obj, f.name), f"[{f.name}] ")
                continue
            meta = f.metadata
            allowed = _describe(meta) if ("range" in meta or "choices" in meta) else kind.__name__ if isinstance(kind, type) else "list"
            if kind is bool:
                allowed = "true/false"
            default = _toml_value(getattr(obj, f.name))
            rows.append(f"| `{prefix}{f.name}` | {meta.get('doc', '')} | {allowed} | `{default}` |")

    walk(Preset, Preset(), "")
    return "\n".join(rows)


def setting_range(section: str, key: str) -> tuple[float, float]:
    """The allowed range of a numeric preset key (``setting_range("sampling", "temperature")``):
    other ways of changing a setting (OSC, the live view) check values against the same bounds."""
    section_type = _hints(Preset).get(section)
    if section_type is None or not dataclasses.is_dataclass(section_type):
        raise KeyError(f"no preset section {section!r}")
    meta = next((f.metadata for f in fields(section_type) if f.name == key), None)
    if meta is None or "range" not in meta:
        raise KeyError(f"no numeric preset key [{section}] {key}")
    return meta["range"]
