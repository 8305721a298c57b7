"""`livegen eval MODEL --session-memory W`: each held-out piece played as one session.

The memory (livegen.model.memory) is built from the piece's earlier notes only, as it would be
if a player had played them, and blended with the model as ``livegen run --memory W`` does:

* pitch NLL with and without memory, on notes CONTEXT.. of every piece (the eval's headline
  positions): the mixture's pitch marginal ``(1 - w) P_lstm(pitch) + w P_mem(pitch)``, with the
  per-note weight the live blend uses;
* the naive reference the issue names: a plain interpolated 4-gram cache over absolute pitches
  of the piece so far, mixed in at a fixed weight of 0.5 (``pitch_nll_naive_cache``);
* motif reuse: the first half of each piece primes the model and teaches the memory, and a
  continuation is sampled with and without memory (same seeds); reuse is the share of the
  continuation's 4-note interval patterns that occur in the primer.  ``longest_copy`` is the
  longest run of the continuation's intervals found verbatim in the primer, plus one (in notes,
  transposed copies count): it shows whether the answer varies the material or copies it.

``python -m livegen.train.session_eval repeats OUT`` builds the repeated-sections set (see
``build_repeated_set``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from livegen.model.memory import MemoryConfig, SessionMemory, interval_pitches
from livegen.notes import PITCH

CONTEXT = 25  # livegen.train.evaluate.CONTEXT: scoring starts at the same note
PATTERN = 3  # intervals in a "4-note interval pattern"


@dataclass(frozen=True)
class SessionSettings:
    weight: float = 0.5
    adaptive: bool = True
    continuation_notes: int = 64
    min_primer: int = 32
    temperature: float = 1.0
    seed: int = 0
    max_continuations: int = 100  # pieces sampled for motif reuse (sampling is the slow part)


# --- likelihoods -----------------------------------------------------------------------------------


def memory_pitch_probs(rows: np.ndarray, start: int, config: MemoryConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """P_mem(pitch_i | notes < i) (n, 128) and the memory's confidence (n,) for i = start..N-1."""
    memory = SessionMemory(config)
    memory.observe(rows[:start])
    probs, confidence = np.empty((len(rows) - start, 128)), np.empty(len(rows) - start)
    for k, i in enumerate(range(start, len(rows))):
        prediction = memory.predict()
        probs[k] = interval_pitches(prediction.probs.sum(axis=1), prediction.last_pitch, memory.config.interval_limit)
        confidence[k] = prediction.confidence
        memory.observe(rows[i])
    return probs, confidence


class PitchCache:
    """The naive cache: interpolated (Witten-Bell) n-grams over absolute pitches, down to uniform."""

    def __init__(self, order: int = 3) -> None:
        self.order = order
        self.tables: list[dict[tuple[int, ...], dict[int, int]]] = [dict() for _ in range(order + 1)]
        self.pitches: list[int] = []

    def probs(self) -> np.ndarray:
        out = np.full(128, 1.0 / 128)
        for k in range(self.order + 1):
            if k > len(self.pitches):
                break
            table = self.tables[k].get(tuple(self.pitches[len(self.pitches) - k:]))
            if not table:
                break
            n = sum(table.values())
            keep = n / (n + len(table))
            out *= 1.0 - keep
            for pitch, count in table.items():
                out[pitch] += keep * count / n
        return out

    def observe(self, pitch: int) -> None:
        for k in range(min(self.order, len(self.pitches)) + 1):
            table = self.tables[k].setdefault(tuple(self.pitches[len(self.pitches) - k:]), {})
            table[pitch] = table.get(pitch, 0) + 1
        self.pitches.append(pitch)


def naive_cache_probs(rows: np.ndarray, start: int) -> np.ndarray:
    cache = PitchCache()
    pitches = np.clip(np.round(rows[:, PITCH]), 0, 127).astype(int)
    out = np.empty((len(rows) - start, 128))
    for i, pitch in enumerate(pitches):
        if i >= start:
            out[i - start] = cache.probs()
        cache.observe(int(pitch))
    return out


def session_likelihoods(predictor, pieces: Sequence, settings: SessionSettings) -> dict:
    """Pitch NLL of the model alone, blended with the memory, and with the naive cache."""
    from livegen.model.blend import blend_weight

    without, with_memory, naive, weights = [], [], [], []
    for piece in pieces:
        rows = predictor.prepare(np.asarray(piece.notes, dtype=np.float64))
        if len(rows) <= CONTEXT:
            continue
        truth = np.clip(np.round(rows[CONTEXT:, PITCH]), 0, 127).astype(int)
        index = np.arange(len(truth))
        lstm = np.exp(predictor.score(rows, CONTEXT).pitch)  # (n, 128)
        memory, confidence = memory_pitch_probs(rows, CONTEXT)
        w = np.array([blend_weight(settings.weight, c, settings.adaptive) for c in confidence])
        without.append(np.log(lstm[index, truth]))
        with_memory.append(np.log((1 - w) * lstm[index, truth] + w * memory[index, truth]))
        naive.append(np.log(0.5 * lstm[index, truth] + 0.5 * naive_cache_probs(rows, CONTEXT)[index, truth]))
        weights.append(w)
    if not without:
        return {"notes_scored": 0}
    nll = lambda parts: round(float(-np.concatenate(parts).mean()), 4)  # noqa: E731
    result = {"notes_scored": int(sum(len(p) for p in without)), "pitch_nll": nll(with_memory),
              "pitch_nll_without": nll(without), "pitch_nll_naive_cache": nll(naive),
              "mean_weight": round(float(np.concatenate(weights).mean()), 4)}
    result["ratio"] = round(result["pitch_nll"] / result["pitch_nll_without"], 4)
    result["ratio_naive_cache"] = round(result["pitch_nll_naive_cache"] / result["pitch_nll_without"], 4)
    return result


# --- motif reuse -----------------------------------------------------------------------------------


def intervals(rows: np.ndarray) -> list[int]:
    pitches = np.round(np.asarray(rows)[:, PITCH]).astype(int)
    return np.diff(pitches).tolist()


def motif_reuse(primer: np.ndarray, continuation: np.ndarray) -> float | None:
    """Share of the continuation's 4-note interval patterns that occur in the primer."""
    seen = set(_grams(intervals(primer), PATTERN))
    grams = _grams(intervals(continuation), PATTERN)
    return sum(g in seen for g in grams) / len(grams) if grams else None


def longest_copy(primer: np.ndarray, continuation: np.ndarray) -> int:
    """Notes in the longest run of the continuation whose intervals occur verbatim in the primer."""
    source, target = intervals(primer), intervals(continuation)
    best = 0
    previous = [0] * (len(source) + 1)
    for t in target:  # longest common substring, one row at a time
        current = [0] * (len(source) + 1)
        for j, s in enumerate(source, 1):
            if s == t:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best + 1 if target else 0


def _grams(values: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(values[i : i + n]) for i in range(len(values) - n + 1)]


def sample_continuation(model, primer: np.ndarray, length: int, weight: float, settings: SessionSettings,
                        seed: int, key_prior: float = 0.0, register_prior: float = 0.0,
                        rhythm_temperature: float = 1.0) -> np.ndarray:
    """What ``livegen run --memory W`` would answer after ``primer`` (the player's notes), with
    the key and register priors and the rhythm temperature it samples with (the eval's
    ``--key-prior``/``--register-prior``/``--rhythm-temperature``)."""
    from livegen.model.blend import MemoryStream
    from livegen.model.params import SamplingParams
    from livegen.model.stream import NoteStream, make_generator
    from livegen.notes import STEP

    stream = MemoryStream(NoteStream(model), SessionMemory(), adaptive=settings.adaptive)
    stream.feed(primer)
    answer = stream.fork()
    generator = make_generator(seed, stream.stream.device)
    params = SamplingParams(temperature=settings.temperature, memory=weight, key_prior=key_prior,
                            register_prior=register_prior, rhythm_temperature=rhythm_temperature)
    rows = np.empty((length, 4))
    chord: list[int] = []
    for i in range(length):
        row = answer.sample(params, generator, chord)
        chord = chord + [int(row[PITCH])] if row[STEP] == 0 else [int(row[PITCH])]
        rows[i] = row
        answer.feed(row)
    return rows


def session_continuations(predictor, pieces: Sequence, settings: SessionSettings) -> dict:
    reuse = {"with": [], "without": [], "real": []}
    copies = {"with": [], "without": [], "real": []}
    count = 0
    for index, piece in enumerate(pieces):
        rows = predictor.prepare(np.asarray(piece.notes, dtype=np.float64))
        cut = max(settings.min_primer, len(rows) // 2)
        length = min(settings.continuation_notes, len(rows) - cut)
        if length < 16:
            continue
        if count >= settings.max_continuations:
            break
        count += 1
        primer = rows[:cut]
        versions = {"real": rows[cut : cut + length]}
        for name, weight in (("with", settings.weight), ("without", 0.0)):
            versions[name] = sample_continuation(predictor.model, primer, length, weight, settings, settings.seed + index,
                                                 getattr(predictor, "key_prior", 0.0), getattr(predictor, "register_prior", 0.0),
                                                 getattr(predictor, "rhythm_temperature", 1.0))
        for name, continuation in versions.items():
            share = motif_reuse(primer, continuation)
            if share is not None:
                reuse[name].append(share)
            copies[name].append(longest_copy(primer, continuation))
    mean = lambda values: round(float(np.mean(values)), 4) if values else None  # noqa: E731
    return {"pieces": count, "notes": settings.continuation_notes,
            "motif_reuse": mean(reuse["with"]), "motif_reuse_without": mean(reuse["without"]),
            "motif_reuse_real": mean(reuse["real"]),
            "longest_copy": {name: {"median": float(np.median(v)) if v else None, "max": int(max(v)) if v else None}
                             for name, v in copies.items()}}


def session_memory_report(predictor, pieces: Sequence, settings: SessionSettings) -> dict:
    """``models[MODEL]["session_memory"]`` of the eval report."""
    if not hasattr(predictor, "prepare") or not hasattr(predictor, "tokenizer"):
        return {"weight": settings.weight, "skipped": "session memory blends with note-lstm models only"}
    likelihood = session_likelihoods(predictor, pieces, settings)
    motifs = session_continuations(predictor, pieces, settings)
    return {"weight": settings.weight, "adaptive": settings.adaptive, **likelihood, **motifs,
            "temperature": settings.temperature, "key_prior": getattr(predictor, "key_prior", 0.0),
            "register_prior": getattr(predictor, "register_prior", 0.0),
            "rhythm_temperature": getattr(predictor, "rhythm_temperature", 1.0)}


# --- the repeated-sections set -----------------------------------------------------------------------


def expanded_pieces(path: Path, limit: int, indices: set[int] | None = None) -> list[tuple[str, list]]:
    """(name, notes) of the scores in ``path`` that have repeat signs, with the repeats played out.

    ``indices``: only these scores of a book (the ``#k`` of a piece id; 0 for a single score).
    """
    import warnings

    import music21

    from livegen.train.data import score_to_notes

    warnings.filterwarnings("ignore", module="music21")
    parsed = music21.converter.parse(str(path))
    scores = list(parsed.scores) if isinstance(parsed, music21.stream.Opus) else [parsed]
    out = []
    for index, score in enumerate(scores):
        if len(out) >= limit:
            break
        if indices is not None and index not in indices:
            continue
        if not score.flatten().getElementsByClass(music21.bar.Repeat):
            continue
        try:
            expanded = score.expandRepeats()
            plain, notes = score_to_notes(score), score_to_notes(expanded)
        except Exception:  # a tune music21 cannot expand is left out
            continue
        if len(notes) >= len(plain) + 8:  # the repeats really add music
            out.append((f"{path.stem}-{index}", notes))
    return out


def split_sources(model_dir: Path, splits: Sequence[str] = ("test", "validation")) -> dict[str, set[int]]:
    """The files and score indices of a model's held-out pieces, for ``build_repeated_set``.

    Pieces that no release trained on make the fair repeated set: the tunes of a book that are in
    the training split are not taken, only the held-out ones.
    """
    from livegen.train.data import CORPUS_PREFIX, file_of, read_split

    recorded = read_split(model_dir)
    wanted: dict[str, set[int]] = {}
    for name in splits:
        for piece_id in recorded[name]:
            file_id = file_of(piece_id)
            index = int(piece_id[len(file_id) + 1:]) if piece_id != file_id else 0
            source = file_id[len(CORPUS_PREFIX):] if file_id.startswith(CORPUS_PREFIX) else file_id
            wanted.setdefault(source, set()).add(index)
    return dict(sorted(wanted.items()))


def build_repeated_set(out: Path, sources: Sequence[str] | dict[str, set[int]], per_file: int = 10,
                       limit: int = 60) -> list[Path]:
    """MIDI files of corpus pieces with their repeats expanded (music21's ``expandRepeats``).

    ``sources``: music21 corpus paths (``oneills1850/0001-0050.abc``...) or files, or a mapping
    of them to the score indices to take (``split_sources``: the held-out pieces of a model's
    split, which is how the shipped set is built since release 0.3 trained on all of O'Neill).
    """
    from livegen.notes import Track, write_midi
    from livegen.train.data import corpus_root

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    chosen = sources if isinstance(sources, dict) else dict.fromkeys(sources)
    for source, indices in chosen.items():
        path = Path(source) if Path(source).is_file() else corpus_root() / source
        for name, notes in expanded_pieces(path, per_file, indices):
            target = out / f"{name}.mid"
            write_midi(target, [Track("melody", notes)])
            written.append(target)
            if len(written) >= limit:
                return written
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m livegen.train.session_eval",
                                     description="build the repeated-sections evaluation set")
    sub = parser.add_subparsers(dest="command", required=True)
    repeats = sub.add_parser("repeats", help="write corpus pieces with their repeats expanded as MIDI files")
    repeats.add_argument("out", type=Path)
    repeats.add_argument("--source", action="append", default=[], metavar="CORPUS_PATH")
    repeats.add_argument("--per-file", type=int, help="pieces per corpus file at most (default 10; all with --from-split)")
    repeats.add_argument("--limit", type=int, help="pieces in all at most (default 60; all with --from-split)")
    repeats.add_argument("--from-split", type=Path, metavar="MODEL",
                         help="take the pieces of MODEL's test and validation splits that have repeats "
                              "(music no release trained on) instead of --source")
    args = parser.parse_args(argv)
    if args.from_split is not None:
        sources: Sequence[str] | dict[str, set[int]] = split_sources(args.from_split)
        everything = sum(len(indices) for indices in sources.values())
        per_file, limit = args.per_file or everything, args.limit or everything
    else:
        sources = args.source or ["oneills1850/0001-0050.abc", "oneills1850/0051-0100.abc",
                                  "oneills1850/0101-0200.abc", "oneills1850/0201-0300.abc",
                                  "oneills1850/0301-0350.abc", "oneills1850/0351-0400.abc"]
        per_file, limit = args.per_file or 10, args.limit or 60
    written = build_repeated_set(args.out, sources, per_file, limit)
    print(f"wrote {len(written)} pieces with repeats expanded to {args.out}", file=sys.stderr)
    return 0 if written else 1

if __name__ == "__main__":
    sys.exit(main())
