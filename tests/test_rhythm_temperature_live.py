"""The rhythm temperature through the real daemon: `livegen run --rhythm-temperature` on JACK
ports.  The answer is played whole with no note left hanging, ``respond`` logs the setting, and a
preset's ``rhythm_temperature`` is used when no flag is given (the sampling itself is tested on
every path in tests/model/test_rhythm_temperature.py)."""

from daemon_driver import wait
from livegen.model.params import DEFAULT_RHYTHM_TEMPERATURE
from midi_probe import note_ons, unmatched

CALL = [60, 62, 64, 65, 67, 65, 64, 62, 60]
LENGTH = 16


def respond_events(daemon, *args: str) -> list[dict]:
    d = daemon("--gap-ms", "250", "--length", str(LENGTH), "--max-seconds", "30", "--seed", "1", *args)
    d.probe.play(CALL, hold=0.06, rest=0.02)
    assert wait(lambda: len(note_ons(d.probe.messages)) >= LENGTH and not unmatched(d.probe.messages), timeout=30), \
        d.events("error")
    assert d.stop()[0] == 0
    assert not unmatched(d.probe.messages)
    return d.events("respond")


def test_the_flag_reaches_the_sampler_and_the_log(daemon):
    assert [e["rhythm_temperature"] for e in respond_events(daemon, "--rhythm-temperature", "0")] == [0.0]


def test_a_presets_rhythm_temperature_is_used(daemon, tmp_path):
    preset = tmp_path / "loose.toml"
    preset.write_text("[sampling]\nrhythm_temperature = 1.3\n", encoding="utf-8")
    assert [e["rhythm_temperature"] for e in respond_events(daemon, "--preset", str(preset))] == [1.3]


def test_without_flag_or_preset_key_the_default_applies(daemon):
    assert [e["rhythm_temperature"] for e in respond_events(daemon)] == [DEFAULT_RHYTHM_TEMPERATURE]
