"""The key prior through the real daemon: `livegen run --key-prior` on JACK ports, played in F# major.

With ``--key-prior 1`` every answer note is in the key the player played (the quick test model is
barely trained, so without the prior it wanders off the key); ``respond`` logs the setting.
"""

from daemon_driver import wait
from midi_probe import note_ons, unmatched

F_SHARP_MAJOR = [66, 68, 70, 71, 73, 75, 77, 78, 77, 75, 73, 71, 70, 68, 66]
IN_KEY = {6, 8, 10, 11, 1, 3, 5}
LENGTH = 24


def answer_pitches(daemon, key_prior: str) -> list[int]:
    d = daemon("--gap-ms", "250", "--length", str(LENGTH), "--max-seconds", "30", "--seed", "1",
               "--key-prior", key_prior)
    d.probe.play(F_SHARP_MAJOR, hold=0.06, rest=0.02)
    assert wait(lambda: len(note_ons(d.probe.messages)) >= LENGTH and not unmatched(d.probe.messages), timeout=30), \
        d.events("error")
    assert d.stop()[0] == 0
    assert [e["key_prior"] for e in d.events("respond")] == [float(key_prior)]
    return [m[1] for _, m in note_ons(d.probe.messages)]


def test_a_full_key_prior_keeps_the_answer_in_the_players_key(daemon):
    kept = answer_pitches(daemon, "1")
    assert len(kept) == LENGTH and {p % 12 for p in kept} <= IN_KEY, kept


def test_without_the_prior_the_test_model_leaves_the_key(daemon):
    free = answer_pitches(daemon, "0")
    assert {p % 12 for p in free} - IN_KEY, free  # so the test above says something
