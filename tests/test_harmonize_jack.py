"""Harmonize mode through real JACK ports: a melody in, voices out, closed with each note, held by
the pedal, ended by the next note, and nothing left on after SIGTERM.

Bounds here are wide (a noisy 2-core machine running other tests); `livegen bench harmonize`
holds the 5 ms promises on a quiet one.
"""

import pytest

from daemon_driver import wait
from livegen import presets
from midi_probe import note_offs, note_ons, unmatched

CHANNEL = 2  # --channel 3
WIDE_S = 0.5  # see the module doc


def voiced(d, count):
    """The pitches the daemon logged for its ``count``-th melody note (the voices to expect)."""
    assert wait(lambda: len(d.events("harmonize")) >= count, timeout=10)
    pitches = set(d.events("harmonize")[count - 1]["voices"])
    assert 1 <= len(pitches) <= 3
    return pitches


def voices(probe, since):
    return [(t, m) for t, m in note_ons(probe.messages, CHANNEL) if t >= since]


def offs_of(probe, pitches, since):
    return [(t, m) for t, m in note_offs(probe.messages, CHANNEL) if t >= since and m[1] in pitches]


def test_each_melody_note_gets_its_voices_and_loses_them_with_its_note_off(daemon):
    d = daemon("--mode", "harmonize", "--voices", "3", "--channel", "3", "--gap-ms", "100")
    probe = d.probe
    for count, pitch in enumerate((67, 69, 71, 72), start=1):
        pressed = probe.send([0x90, pitch, 90])
        expected = voiced(d, count)
        assert wait(lambda: len(voices(probe, pressed)) == len(expected), timeout=10), probe.messages[-6:]
        heard = voices(probe, pressed)
        pitches = {m[1] for _, m in heard}
        assert pitches == expected and all(p < pitch for p in pitches), "distinct voices under the melody"
        assert heard[0][0] - pressed < WIDE_S
        assert max(t for t, _ in heard) - min(t for t, _ in heard) < 0.05, "the voices are sent at once"
        released = probe.send([0x80, pitch, 0])
        assert wait(lambda: len(offs_of(probe, pitches, released)) == len(pitches), timeout=5)
        assert max(t for t, _ in offs_of(probe, pitches, released)) - released < WIDE_S
    assert not unmatched(probe.messages, CHANNEL)
    assert not d.events("respond"), "harmonize mode answers no phrase"
    assert len(d.events("harmonize")) == 4


def test_the_pedal_holds_the_voices_and_the_next_note_ends_them(daemon):
    d = daemon("--mode", "harmonize", "--voices", "2", "--channel", "3", "--harmonize", "above")
    probe = d.probe
    probe.send([0xB0, 64, 127])
    pressed = probe.send([0x90, 60, 90])
    first = voiced(d, 1)
    assert wait(lambda: len(voices(probe, pressed)) == len(first), timeout=10)
    assert all(p > 60 for p in first), "above: a descant"
    released = probe.send([0x80, 60, 0])
    assert not wait(lambda: offs_of(probe, first, released), timeout=0.4), "held by the pedal"
    pedal_up = probe.send([0xB0, 64, 0])
    assert wait(lambda: len(offs_of(probe, first, pedal_up)) == len(first), timeout=5)
    # legato: the next melody note ends the previous voices before its own sound
    pressed = probe.send([0x90, 62, 90])
    second = voiced(d, 2)
    assert wait(lambda: len(voices(probe, pressed)) == len(second), timeout=10)
    legato = probe.send([0x90, 64, 90])
    third = voiced(d, 3)
    assert wait(lambda: len(offs_of(probe, second, legato)) == len(second)
                and len(voices(probe, legato)) == len(third), timeout=10)
    ended = max(t for t, _ in offs_of(probe, second, legato))
    assert ended <= min(t for t, _ in voices(probe, legato)) + 0.001
    probe.send([0x80, 62, 0])
    probe.send([0x80, 64, 0])
    assert wait(lambda: not unmatched(probe.messages, CHANNEL), timeout=5)


def test_sigterm_with_a_key_held_leaves_no_voice_on(daemon):
    d = daemon("--mode", "harmonize", "--voices", "3", "--channel", "3")
    pressed = d.probe.send([0x90, 72, 90])
    expected = voiced(d, 1)
    assert wait(lambda: len(voices(d.probe, pressed)) == len(expected), timeout=10), (d.probe.messages, d.events())
    code, took = d.stop()
    assert code == 0 and took < 5
    assert wait(lambda: not unmatched(d.probe.messages, CHANNEL), timeout=2)


@pytest.mark.parametrize("name", ["choir", "strings"])
def test_shipped_harmonize_presets_voice_a_melody(daemon, name):
    preset = presets.load(name)
    assert preset.mode == "harmonize"
    channel = preset.output.channel - 1
    d = daemon("--preset", name)
    pressed = d.probe.send([0x90, 67, 90])
    expected = set(voiced(d, 1)) if preset.voices <= 3 else None
    assert wait(lambda: {m[1] for t, m in note_ons(d.probe.messages, channel) if t >= pressed} == expected, timeout=10)
    d.probe.send([0x80, 67, 0])
    assert wait(lambda: not unmatched(d.probe.messages, channel), timeout=5)
