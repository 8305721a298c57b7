"""Continuation metrics after Yang & Lerch (2018), "On the evaluation of generative models in music".

For each piece (a list of notes) nine features are computed (``FEATURES``).  Two sets of pieces,
real continuations and generated ones, are compared per feature the paper's way:

1. intra-set distances: Euclidean distances between every pair of pieces of the real set;
2. inter-set distances: between every real piece and every generated piece;
3. a Gaussian kernel density estimate (Scott's bandwidth) of each distance sample;
4. the *overlapped area* of the two densities (1 = the generated set is as close to the real set
   as real pieces are to each other; 0 = nothing in common) and the KL divergence
   KL(intra-real || inter), both on a shared grid.

Times are in seconds (the paper counts in beats; a live player's notes have no beat grid), so the
note-length classes are 12 log-spaced bins from 1/16 s to 4 s.  numpy only.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from livegen.notes import Note, sort_notes

LENGTH_EDGES = np.geomspace(1 / 16, 4.0, 13)[1:-1]  # 11 inner edges -> 12 note-length classes
LENGTH_CLASSES = 12
ONSET_RESOLUTION = 0.001  # seconds: onsets closer than this are one onset (a chord)


def _pitches(notes: Sequence[Note]) -> np.ndarray:
    return np.array([n.pitch for n in sort_notes(notes)], dtype=np.int64)


def _onsets(notes: Sequence[Note]) -> np.ndarray:
    starts = np.array(sorted(n.start for n in notes))
    if len(starts) == 0:
        return starts
    keep = np.concatenate([[True], np.diff(starts) > ONSET_RESOLUTION])
    return starts[keep]


def _length_classes(notes: Sequence[Note]) -> np.ndarray:
    durations = np.array([n.end - n.start for n in sort_notes(notes)])
    return np.searchsorted(LENGTH_EDGES, durations, side="right")


def _normalised(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else counts.astype(np.float64)


def pitch_class_histogram(notes: Sequence[Note]) -> np.ndarray:
    return _normalised(np.bincount(_pitches(notes) % 12, minlength=12).astype(np.float64))


def pitch_class_transition_matrix(notes: Sequence[Note]) -> np.ndarray:
    pc = _pitches(notes) % 12
    matrix = np.zeros((12, 12))
    np.add.at(matrix, (pc[:-1], pc[1:]), 1.0)
    return _normalised(matrix).ravel()


def pitch_range(notes: Sequence[Note]) -> np.ndarray:
    p = _pitches(notes)
    return np.array([float(p.max() - p.min()) if len(p) else 0.0])


def mean_pitch_interval(notes: Sequence[Note]) -> np.ndarray:
    p = _pitches(notes)
    return np.array([float(np.abs(np.diff(p)).mean()) if len(p) > 1 else 0.0])


def notes_per_second(notes: Sequence[Note]) -> np.ndarray:
    if not notes:
        return np.array([0.0])
    span = max(n.end for n in notes) - min(n.start for n in notes)
    return np.array([len(notes) / max(span, 1e-3)])


def mean_inter_onset_interval(notes: Sequence[Note]) -> np.ndarray:
    onsets = _onsets(notes)
    return np.array([float(np.diff(onsets).mean()) if len(onsets) > 1 else 0.0])


def note_length_histogram(notes: Sequence[Note]) -> np.ndarray:
    return _normalised(np.bincount(_length_classes(notes), minlength=LENGTH_CLASSES).astype(np.float64))


def note_length_transition_matrix(notes: Sequence[Note]) -> np.ndarray:
    classes = _length_classes(notes)
    matrix = np.zeros((LENGTH_CLASSES, LENGTH_CLASSES))
    np.add.at(matrix, (classes[:-1], classes[1:]), 1.0)
    return _normalised(matrix).ravel()


def polyphony(notes: Sequence[Note]) -> np.ndarray:
    """Mean number of notes sounding at each onset (1 = a single line)."""
    onsets = _onsets(notes)
    if len(onsets) == 0:
        return np.array([0.0])
    starts = np.array([n.start for n in notes])
    ends = np.array([n.end for n in notes])
    sounding = [(np.sum((starts <= t + ONSET_RESOLUTION) & (ends > t + ONSET_RESOLUTION))) for t in onsets]
    return np.array([float(np.mean(sounding))])


FEATURES: dict[str, Callable[[Sequence[Note]], np.ndarray]] = {
    "pitch_class_histogram": pitch_class_histogram,
    "pitch_class_transition_matrix": pitch_class_transition_matrix,
    "pitch_range": pitch_range,
    "mean_pitch_interval": mean_pitch_interval,
    "notes_per_second": notes_per_second,
    "mean_inter_onset_interval": mean_inter_onset_interval,
    "note_length_histogram": note_length_histogram,
    "note_length_transition_matrix": note_length_transition_matrix,
    "polyphony": polyphony,
}


def piece_features(notes: Sequence[Note]) -> dict[str, np.ndarray]:
    return {name: fn(notes) for name, fn in FEATURES.items()}


# --- set comparison ------------------------------------------------------------------------------


def histogram_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Overlap of two histograms, each normalised to sum 1: sum of the bin-wise minimum."""
    a, b = _normalised(np.asarray(a, float)), _normalised(np.asarray(b, float))
    return float(np.minimum(a, b).sum())


def intra_set_distances(features: np.ndarray) -> np.ndarray:
    """(n, d) feature vectors -> distances between all pairs i != j (each pair once)."""
    features = np.asarray(features, float).reshape(len(features), -1)
    i, j = np.triu_indices(len(features), k=1)
    return np.linalg.norm(features[i] - features[j], axis=1)


def inter_set_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, float).reshape(len(a), -1)
    b = np.asarray(b, float).reshape(len(b), -1)
    return np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1).ravel()


def _bandwidth(samples: np.ndarray, scale: float) -> float:
    """Scott's rule, floored so a constant sample still has a (narrow) density."""
    std = samples.std(ddof=1) if len(samples) > 1 else 0.0
    return max(std * len(samples) ** (-1 / 5), 1e-3 * scale, 1e-9)


def _kde(samples: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    density = np.zeros(len(grid))
    for chunk in np.array_split(samples, max(1, len(samples) // 4096)):  # bounded memory
        z = (grid[:, None] - chunk[None, :]) / bandwidth
        density += np.exp(-0.5 * z * z).sum(axis=1)
    return density / (len(samples) * bandwidth * np.sqrt(2 * np.pi))


def overlap_and_kl(a: np.ndarray, b: np.ndarray, points: int = 1000) -> tuple[float, float]:
    """Overlapped area and KL(a || b) of the Gaussian KDEs of two 1-D samples.

    The grid spans both samples plus 4 bandwidths each side, so identical samples overlap by 1
    (up to integration error) and far-apart samples by 0.
    """
    a, b = np.asarray(a, float).ravel(), np.asarray(b, float).ravel()
    if len(a) == 0 or len(b) == 0:
        return float("nan"), float("nan")
    scale = max(np.abs(np.concatenate([a, b])).max(), 1e-9)
    bw_a, bw_b = _bandwidth(a, scale), _bandwidth(b, scale)
    margin = 4 * max(bw_a, bw_b)
    grid = np.linspace(min(a.min(), b.min()) - margin, max(a.max(), b.max()) + margin, points)
    pa, pb = _kde(a, grid, bw_a), _kde(b, grid, bw_b)
    overlap = float(np.trapezoid(np.minimum(pa, pb), grid))
    eps = 1e-10  # KL of the discretised densities, as scipy.stats.entropy would compute it
    qa, qb = pa + eps, pb + eps
    qa, qb = qa / qa.sum(), qb / qb.sum()
    kl = float(np.sum(qa * np.log(qa / qb)))
    return min(overlap, 1.0), kl


def compare_sets(real: Sequence[Sequence[Note]], generated: Sequence[Sequence[Note]]) -> dict[str, dict[str, float]]:
    """Per feature: overlap area and KL between intra-real and inter (real vs generated) distances."""
    real_f = [piece_features(p) for p in real]
    gen_f = [piece_features(p) for p in generated]
    result = {}
    for name in FEATURES:
        a = np.stack([f[name] for f in real_f])
        b = np.stack([f[name] for f in gen_f])
        overlap, kl = overlap_and_kl(intra_set_distances(a), inter_set_distances(a, b))
        result[name] = {"overlap": round(overlap, 4), "kl": round(kl, 4),
                        "real_mean": _round(a.mean(axis=0)), "generated_mean": _round(b.mean(axis=0))}
    return result


def _round(values: np.ndarray):
    values = np.asarray(values, float)
    return round(float(values[0]), 4) if values.size == 1 else None  # vectors are too long to report


def rhythm_summary(pieces: Sequence[Sequence[Note]]) -> dict[str, float]:
    """How varied the timing is: collapse to one step shows as tiny spread and few distinct values."""
    iois, distinct, durations = [], [], []
    for notes in pieces:
        onsets = _onsets(notes)
        steps = np.diff(onsets)
        if len(steps):
            iois.append(steps)
            distinct.append(len(np.unique(np.round(steps, 2))) / len(steps))
        durations.append(np.array([n.end - n.start for n in notes]))
    all_iois = np.concatenate(iois) if iois else np.zeros(1)
    all_durations = np.concatenate(durations) if durations else np.zeros(1)
    step_cv = [s.std() / s.mean() for s in iois if len(s) > 1 and s.mean() > 0]
    duration_cv = [d.std() / d.mean() for d in durations if len(d) > 1 and d.mean() > 0]
    return {
        "ioi_mean": round(float(all_iois.mean()), 4),
        "ioi_std": round(float(all_iois.std()), 4),
        "ioi_cv_per_piece": round(float(np.mean(step_cv)) if step_cv else 0.0, 4),
        "distinct_ioi_fraction": round(float(np.mean(distinct)) if distinct else 0.0, 4),
        "duration_mean": round(float(all_durations.mean()), 4),
        "duration_std": round(float(all_durations.std()), 4),
        "duration_cv_per_piece": round(float(np.mean(duration_cv)) if duration_cv else 0.0, 4),
    }
