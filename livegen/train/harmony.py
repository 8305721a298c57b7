"""The harmonize metric: the model's voices under Bach's soprano against Bach's own lower voices.

For each held-out chorale the soprano is played to the model note by note, exactly as
harmonize mode plays a live melody (livegen.engine.harmonize.voice_chord: the melody fed with
the guessed duration, ``VOICES`` voices sampled below it and fed back).  At every soprano onset:

- ``pc_overlap``: Jaccard overlap of the voices' pitch classes with those of Bach's alto, tenor
  and bass sounding at that onset (1 = the same pitch classes);
- ``consonant``: share of voices whose interval to the melody is consonant: unison/octave,
  thirds, sixths, the fifth, and the fourth unless the voice is the lowest of the chord (a
  fourth above the bass is the one dissonant perfect interval);
- ``in_key``: share of voices whose pitch class belongs to the chorale's key (Krumhansl-Kessler
  estimate over all its notes; minor keys admit the raised sixth and seventh);
- ``parallels_per_onset``: parallel fifths and octaves (two parts moving the same way from one
  perfect fifth/octave to another, compound intervals included) between each onset and the
  next, per onset;
- ``doubled_melody``: voices on the melody's own pitch (harmonize mode never plays one).

The same figures are given for the rule-based baseline, diatonic thirds stacked below the
melody in the chorale's key, and for Bach himself (consonance, key, parallels).  The soprano is
the highest note sounding at its own onset; Bach's lower voices are every other note sounding
then.  Only the pieces given are read: ``livegen eval`` passes the split's held-out chorales.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from livegen.engine.harmonize import Melody, ModelVoicing, guess_duration, voice_chord, voice_ranks
from livegen.model.key_prior import MAJOR_PROFILE, MINOR_PROFILE  # Krumhansl-Kessler, tonic first
from livegen.model.params import SamplingParams
from livegen.notes import Note, array_to_notes

VOICES = 3
PLACEMENT = "below"
PARAMS = SamplingParams(temperature=0.7, top_p=0.9, pitch_low=21, pitch_high=108)  # presets/choir.toml's
CHORALE_MARK = "bach/bwv"

CONSONANT = frozenset({0, 3, 4, 7, 8, 9})
PERFECT = frozenset({0, 7})
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 9, 10, 11)  # natural, with the raised sixth and seventh
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)


@dataclass(frozen=True)
class Key:
    tonic: int  # pitch class
    minor: bool

    @property
    def pitch_classes(self) -> frozenset[int]:
        return frozenset((self.tonic + d) % 12 for d in (MINOR if self.minor else MAJOR))

    @property
    def scale(self) -> tuple[int, ...]:
        """The scale the baseline's thirds walk on (harmonic minor in minor keys)."""
        return tuple(sorted((self.tonic + d) % 12 for d in (HARMONIC_MINOR if self.minor else MAJOR)))

    def __str__(self) -> str:
        names = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
        return f"{names[self.tonic]} {'minor' if self.minor else 'major'}"


def estimate_key(notes: Sequence[Note]) -> Key:
    """Krumhansl-Kessler: the key whose profile correlates best with the duration-weighted
    pitch-class histogram."""
    histogram = np.zeros(12)
    for n in notes:
        histogram[n.pitch % 12] += max(n.end - n.start, 1e-3)
    best, best_r = Key(0, False), -np.inf
    for minor, profile in ((False, MAJOR_PROFILE), (True, MINOR_PROFILE)):
        for tonic in range(12):
            r = np.corrcoef(histogram, np.roll(profile, tonic))[0, 1]
            if np.isfinite(r) and r > best_r:
                best, best_r = Key(tonic, minor), r
    return best


@dataclass(frozen=True)
class Onset:
    melody: Note
    under: tuple[int, ...]  # Bach's lower notes sounding at the melody's onset, high to low


def soprano_onsets(notes: Sequence[Note]) -> list[Onset]:
    """Each note that is the highest sounding at its own onset, with the notes under it."""
    ordered = sorted(notes, key=lambda n: (n.start, -n.pitch))
    out = []
    for note in ordered:
        sounding = [n for n in ordered if n.start <= note.start + 1e-6 and n.end > note.start + 1e-6 and n is not note]
        if any(n.pitch >= note.pitch for n in sounding):
            continue
        if out and abs(out[-1].melody.start - note.start) < 1e-6:
            continue
        out.append(Onset(note, tuple(sorted((n.pitch for n in sounding), reverse=True))))
    return out


THIRDS_DEGREES = (2, 4, 7)  # scale steps under the melody: a third, a fifth (two thirds), the octave


def thirds_below(melody: int, key: Key, voices: int = VOICES) -> list[int]:
    """The baseline: diatonic thirds stacked under the melody in the key (a third, a fifth, the
    octave; then the same an octave lower), the melody snapped down to the scale when chromatic."""
    scale = key.scale
    degree_pitches = [p for p in range(melody - 12 * (voices // 3 + 2), melody + 1) if p % 12 in scale]
    top = len(degree_pitches) - 1  # the melody, or the scale note just under it
    steps = [THIRDS_DEGREES[k % 3] + 7 * (k // 3) for k in range(voices)]
    return [degree_pitches[top - s] for s in steps if top - s >= 0 and degree_pitches[top - s] < melody]


def voicing_for(stream) -> ModelVoicing:
    """A NoteStream's voicing: its model's chord order, pitches sampled at a fixed step."""
    from livegen.model.voicing import chord_order_of, sample_pitch_at

    return ModelVoicing(chord_order=chord_order_of(stream.model), sample=sample_pitch_at)


def model_voices(predictor, voicing: ModelVoicing, onsets: Sequence[Onset], voices: int = VOICES,
                 placement: str = PLACEMENT, params: SamplingParams = PARAMS) -> list[list[tuple[int, int]]]:
    """(rank, pitch) voices per onset, harmonize mode's way; ``predictor`` is a fresh stream."""
    ranks = voice_ranks(voices, placement)
    out, previous_onset, previous_duration, primed, chord = [], None, None, False, {}
    for onset in onsets:
        m = onset.melody
        step = 0.0 if previous_onset is None else max(m.start - previous_onset, 0.0)
        melody = Melody(m.pitch, step, guess_duration(previous_duration), m.velocity)
        placed = voice_chord(predictor, voicing, melody, ranks, params, m.velocity, primed=primed, previous=chord)
        out.append(sorted(placed))
        chord = {0: m.pitch, **dict(placed)}
        previous_onset, previous_duration, primed = m.start, m.end - m.start, True
    return out


def _ranked(pitches: Sequence[int]) -> list[tuple[int, int]]:
    """Lower voices high to low as ranks -1, -2, ... (Bach's and the baseline's)."""
    return [(-(i + 1), p) for i, p in enumerate(sorted(pitches, reverse=True))]


def score(onsets: Sequence[Onset], voicings: Sequence[Sequence[tuple[int, int]]], key: Key,
          compare: bool = True) -> dict:
    """The figures (module doc) of one system's voicings; ``compare`` adds pc_overlap with Bach."""
    consonant = in_key = total = doubled = parallels = 0
    overlaps: list[float] = []
    for onset, voiced in zip(onsets, voicings):
        m = onset.melody.pitch
        pitches = [p for _, p in voiced]
        lowest = min([m, *pitches])
        for p in pitches:
            total += 1
            ic = abs(m - p) % 12
            consonant += ic in CONSONANT or (ic == 5 and p != lowest)
            in_key += p % 12 in key.pitch_classes
            doubled += p == m
        if compare and onset.under:
            mine, bach = {p % 12 for p in pitches}, {p % 12 for p in onset.under}
            overlaps.append(len(mine & bach) / len(mine | bach))
    for (a, va), (b, vb) in zip(zip(onsets, voicings), zip(onsets[1:], voicings[1:])):
        before = {0: a.melody.pitch, **dict(va)}
        after = {0: b.melody.pitch, **dict(vb)}
        parts = sorted(set(before) & set(after))
        for i, x in enumerate(parts):
            for y in parts[i + 1:]:
                moved_x, moved_y = after[x] - before[x], after[y] - before[y]
                if moved_x == 0 or moved_y == 0 or (moved_x > 0) != (moved_y > 0):
                    continue
                first, second = abs(before[x] - before[y]) % 12, abs(after[x] - after[y]) % 12
                parallels += first in PERFECT and first == second
    n = len(onsets)
    return {
        "onsets": n,
        "voices_per_onset": round(total / n, 3) if n else None,
        "pc_overlap": round(float(np.mean(overlaps)), 4) if compare and overlaps else None,
        "consonant": round(consonant / total, 4) if total else None,
        "in_key": round(in_key / total, 4) if total else None,
        "parallels_per_onset": round(parallels / max(n - 1, 1), 4) if n else None,
        "doubled_melody": doubled,
    }


def _pool(figures: list[dict]) -> dict:
    """Onset-weighted means over pieces (counts summed)."""
    weights = np.array([f["onsets"] for f in figures], dtype=float)
    out: dict = {"onsets": int(weights.sum()), "doubled_melody": int(sum(f["doubled_melody"] for f in figures))}
    for key in ("voices_per_onset", "pc_overlap", "consonant", "in_key", "parallels_per_onset"):
        pairs = [(f[key], w) for f, w in zip(figures, weights) if f[key] is not None]
        out[key] = round(float(sum(v * w for v, w in pairs) / sum(w for _, w in pairs)), 4) if pairs else None
    return out


def chorales(pieces: Sequence) -> list:
    """The Bach chorales among the pieces (ids from the music21 corpus), else all pieces."""
    found = [p for p in pieces if CHORALE_MARK in p.id]
    return found or list(pieces)


def evaluate_harmonize(make_stream: Callable[[], object], voicing: ModelVoicing, pieces: Sequence,
                       voices: int = VOICES, placement: str = PLACEMENT, params: SamplingParams = PARAMS) -> dict:
    """The report section ``models[MODEL]["harmonize"]``: model, baseline and Bach, pooled over pieces.

    ``make_stream()`` gives a fresh predictor per piece (a seeded NoteStream)."""
    chosen = chorales(pieces)
    model, baseline, bach, keys = [], [], [], []
    for piece in chosen:
        notes = array_to_notes(piece.notes)
        onsets = soprano_onsets(notes)
        if len(onsets) < 2:
            continue
        key = estimate_key(notes)
        keys.append(str(key))
        model.append(score(onsets, model_voices(make_stream(), voicing, onsets, voices, placement, params), key))
        baseline.append(score(onsets, [_ranked(thirds_below(o.melody.pitch, key, voices)) for o in onsets], key))
        bach.append(score(onsets, [_ranked(o.under) for o in onsets], key, compare=False))
    return {
        "pieces": len(model),
        "chorales_only": any(CHORALE_MARK in p.id for p in pieces),
        "settings": {"voices": voices, "placement": placement, "chord_order": voicing.chord_order,
                     "temperature": params.temperature, "top_p": params.top_p,
                     "pitch_range": [params.pitch_low, params.pitch_high],
                     "guessed_duration": "the previous soprano note's (first: 0.5 s), as live"},
        "model": _pool(model) if model else None,
        "thirds_baseline": _pool(baseline) if baseline else None,
        "bach": _pool(bach) if bach else None,
        "keys": keys,
    }


def format_harmonize(models: dict) -> str:
    """Plain-text lines of every model's harmonize section (``livegen eval --harmonize``)."""
    lines = []
    columns = ("pc_overlap", "consonant", "in_key", "parallels_per_onset", "voices_per_onset")
    for name, figures in models.items():
        section = figures.get("harmonize")
        if not section or not section.get("model"):
            continue
        s = section["settings"]
        lines.append(f"harmonize {name}: {section['pieces']} pieces, {section['model']['onsets']} soprano onsets, "
                     f"{s['voices']} voices {s['placement']} ({s['chord_order']} chord order, T {s['temperature']:g})")
        lines.append("  " + "system".ljust(16) + "".join(c.rjust(21) for c in columns))
        for system in ("model", "thirds_baseline", "bach"):
            row = section[system]
            lines.append("  " + system.ljust(16) + "".join(
                ("-" if row.get(c) is None else f"{row[c]:.3f}").rjust(21) for c in columns))
    return "\n".join(lines)
