"""The register prior through the real daemon: `livegen run --register-prior` on JACK ports,
played high on the keyboard.

With ``--register-prior 1`` every answer note lies within the span the player played (the quick
test model is barely trained, so without the prior it wanders over the keyboard); ``respond``
logs the setting, and a preset's ``register_prior`` is used when no flag is given.
"""

from daemon_driver import wait
from midi_probe import note_ons, unmatched

HIGH = [84, 86, 88, 89, 91, 93, 95, 96, 95, 93, 91, 89, 88, 86, 84]
LENGTH = 24


def answer_pitches(daemon, *args: str) -> tuple[list[int], list[dict]]:
    d = daemon("--gap-ms", "250", "--length", str(LENGTH), "--max-seconds", "30", "--seed", "1",
               "--key-prior", "0", *args)
    d.probe.play(HIGH, hold=0.06, rest=0.02)
    assert wait(lambda: len(note_ons(d.probe.messages)) >= LENGTH and not unmatched(d.probe.messages), timeout=30), \
        d.events("error")
    assert d.stop()[0] == 0
    return [m[1] for _, m in note_ons(d.probe.messages)], d.events("respond")


def test_a_full_register_prior_keeps_the_answer_in_the_players_span(daemon):
    kept, responds = answer_pitches(daemon, "--register-prior", "1")
    assert [e["register_prior"] for e in responds] == [1.0]
    assert len(kept) == LENGTH and min(HIGH) <= min(kept) and max(kept) <= max(HIGH), kept


def test_without_the_prior_the_test_model_leaves_the_span(daemon):
    free, responds = answer_pitches(daemon, "--register-prior", "0")
    assert [e["register_prior"] for e in responds] == [0.0]
    assert min(free) < min(HIGH) or max(free) > max(HIGH), free  # so the test above says something


def test_a_presets_register_prior_is_used(daemon, tmp_path):
    preset = tmp_path / "high.toml"
    preset.write_text("[sampling]\nregister_prior = 1.0\nkey_prior = 0.0\n", encoding="utf-8")
    kept, responds = answer_pitches(daemon, "--preset", str(preset))
    assert [e["register_prior"] for e in responds] == [1.0]
    assert min(HIGH) <= min(kept) and max(kept) <= max(HIGH), kept
