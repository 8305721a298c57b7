"""Evaluation of any mix of models on held-out pieces: likelihoods, continuations, invalid outputs.

Every model is wrapped in a *predictor* with two jobs:

* ``score(rows, start)``: log-probabilities of the true next note's fields at positions
  ``start..N-1`` of a piece, given everything before (the seed recipe sees only its 25-note
  window, the Markov model its last ``order`` pitches, our LSTM the whole prefix);
* ``continue_rows(primer, length, seed)``: sample a continuation, rows before any clamping, so
  invalid outputs can be counted.

Pitch NLL, the headline number, is comparable across all three: each gives a 128-way distribution
over the next pitch *from the context alone*.  Our model predicts step first and pitch given step,
so its headline is the marginal  P(pitch | context) = Σ_s P(s | context) · P(pitch | context, s);
P(pitch | context, true step) is reported too as ``pitch_nll_given_step`` (lower, since it knows
e.g. that a chord note follows).  Scoring starts at note ``CONTEXT`` (25, the seed's window) of
every piece, so every model has a full context for every scored note.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from livegen.model.markov import ARCH as MARKOV, MarkovModel
from livegen.model.timebase import order_chords
from livegen.model.tokens import Tokenizer
from livegen.notes import DURATION, PITCH, STEP, array_to_notes
from livegen.train import metrics
from livegen.train.data import Piece
from livegen.train.follow import FollowSettings, follow, follow_pairs

CONTEXT = 25


@dataclass
class Scores:
    """Per scored note: log-probabilities over pitch, and of the true class of other fields."""

    pitch: np.ndarray  # (n, 128) log P(pitch | context), the headline
    pitch_given_step: np.ndarray | None = None  # (n, 128) log P(pitch | context, true step)
    step: np.ndarray | None = None  # (n,) log P(true step bin | ...)
    duration: np.ndarray | None = None
    velocity: np.ndarray | None = None
    # (N - 1, hidden) the LSTM's summary after each note but the last: what a memory that attends
    # over the piece compares (livegen.train.pointer_ablation)
    summaries: np.ndarray | None = None


class LSTMPredictor:
    kind = "note-lstm"

    def __init__(self, model) -> None:
        self.model = model.eval()
        self.tokenizer = Tokenizer(model.config.tokens)
        self.device = next(model.parameters()).device
        self._stream = None  # one NoteStream, forked per continuation: its weights are packed once
        self.key_prior = 0.0  # SamplingParams.key_prior of the continuations (livegen eval --key-prior)
        self.register_prior = 0.0  # ... and register_prior (livegen eval --register-prior)
        self.rhythm_temperature = 1.0  # ... and rhythm_temperature (livegen eval --rhythm-temperature)

    def prepare(self, rows: np.ndarray) -> np.ndarray:
        """The piece with its chords in the order this model reads them (the same notes)."""
        config = self.tokenizer.config
        return order_chords(rows, config.chord_order, config.chord_seconds)

    @torch.no_grad()
    def score(self, rows: np.ndarray, start: int) -> Scores:
        model = self.model
        tokens = torch.as_tensor(self.tokenizer.encode(rows), device=self.device)  # (N, 4)
        h, _ = model.encode(tokens.unsqueeze(0))  # (1, N, hidden)
        context = h[0, start - 1 : len(rows) - 1]  # (n, hidden): the summary before note i
        target = tokens[start:]  # (n, 4)
        previous = tokens[start - 1 : len(rows) - 1, 0]  # the pitch read before note i
        logits = model.heads(context, target, previous)
        log_step = torch.log_softmax(logits.step.float(), -1)  # (n, S)

        def true(log_probs, column):
            return log_probs.gather(-1, target[:, column : column + 1]).squeeze(-1).cpu().numpy()

        return Scores(
            pitch=log_pitch_marginal(model, context, log_step, previous).cpu().numpy(),
            pitch_given_step=torch.log_softmax(logits.pitch.float(), -1).cpu().numpy(),
            step=true(log_step, 1),
            duration=true(torch.log_softmax(logits.duration.float(), -1), 2),
            velocity=true(torch.log_softmax(logits.velocity.float(), -1), 3),
            summaries=h[0, : len(rows) - 1].float().cpu().numpy(),
        )

    @torch.no_grad()
    def continue_rows(self, primer: np.ndarray, length: int, seed: int, temperature: float,
                      pitch_range: tuple[int, int]) -> np.ndarray:
        from livegen.model.sampling import SamplingParams
        from livegen.model.stream import NoteStream, make_generator

        if self._stream is None:
            self._stream = NoteStream(self.model)
        stream = self._stream.fork()
        stream.reset()
        generator = make_generator(seed, self.device)
        params = SamplingParams(temperature=temperature, pitch_low=pitch_range[0], pitch_high=pitch_range[1],
                                key_prior=self.key_prior, register_prior=self.register_prior,
                                rhythm_temperature=self.rhythm_temperature)
        stream.feed(primer)
        rows = np.empty((length, 4))
        chord: list[int] = []
        for i in range(length):
            row = stream.sample(params, generator, chord)
            chord = chord + [int(row[PITCH])] if row[STEP] == 0 else [int(row[PITCH])]
            rows[i] = row
            stream.feed(row)
        return rows


class SeedPredictor:
    kind = "seed-lstm"

    def __init__(self, model) -> None:
        self.model = model.eval()

    def score(self, rows: np.ndarray, start: int) -> Scores:
        window = self.model.config.window
        if start < window:
            raise ValueError(f"the seed model needs {window} notes of context, scoring starts at {start}")
        log_probs = self.model.pitch_log_probs(rows)  # position i >= window at index i - window
        return Scores(pitch=log_probs[start - window :])

    def continue_rows(self, primer, length, seed, temperature, pitch_range):
        generator = torch.Generator(device=next(self.model.parameters()).device).manual_seed(seed)
        return self.model.generate(primer, length, temperature, generator)


class MarkovPredictor:
    kind = MARKOV

    def __init__(self, model: MarkovModel) -> None:
        self.model = model

    def score(self, rows: np.ndarray, start: int) -> Scores:
        order = self.model.config.order
        tokens = self.model.tokenizer.encode(rows)
        pitches = tokens[:, 0].tolist()
        n = len(rows) - start
        pitch = np.empty((n, 128))
        others = np.empty((3, n))
        for k, i in enumerate(range(start, len(rows))):
            context = pitches[max(0, i - order) : i]
            pitch[k] = np.log(self.model.probabilities(context, 0))
            for field in (1, 2, 3):
                others[field - 1, k] = np.log(self.model.probabilities(context, field)[tokens[i, field]])
        return Scores(pitch=pitch, step=others[0], duration=others[1], velocity=others[2])

    def continue_rows(self, primer, length, seed, temperature, pitch_range):
        return self.model.continue_rows(primer, length, np.random.default_rng(seed), temperature, *pitch_range)


def log_pitch_marginal(model, context: torch.Tensor, log_step: torch.Tensor,
                       previous: torch.Tensor | None = None) -> torch.Tensor:
    """log P(pitch) (n, 128) summed over the step bins, given the summaries ``context`` (n, hidden)
    and log P(step) (n, S): the eval's headline pitch distribution (the step is not known yet).
    ``previous`` (n,): the pitch read before each note, for a model with an interval head."""
    if model.config.interval_range and previous is None:
        raise ValueError("this model's interval head needs the pitch read before each note (previous)")
    marginal = []
    previous_parts = previous.split(256) if previous is not None else [None] * len(context.split(256))
    for part, part_log_step, part_previous in zip(context.split(256), log_step.split(256), previous_parts):
        c = part[:, None, :] + model.cond_step.weight[None, :, :]  # (m, S, hidden)
        logits = model.pitch_head(c)
        if model.config.interval_range:
            logits = logits + model.interval_logits(c, part_previous[:, None].expand(-1, c.shape[1]))
        log_pitch = torch.log_softmax(logits.float(), -1)  # (m, S, 128)
        marginal.append(torch.logsumexp(part_log_step[:, :, None] + log_pitch, dim=1))
    return torch.cat(marginal)


def load_predictor(spec: str, device: torch.device, markov: MarkovModel | None = None, key_prior: float = 0.0,
                   register_prior: float = 0.0, rhythm_temperature: float = 1.0):
    """A model folder (any registered arch or a saved Markov model), or an already fitted Markov.

    ``key_prior``, ``register_prior``, ``rhythm_temperature``: the note-lstm's continuations lean
    to the key, stay near the register and sample their rhythm as ``livegen run`` does (the
    baselines sample as they are)."""
    from livegen.model.checkpoint import load_model
    from livegen.model.seed_baseline import SeedLSTM

    if markov is not None:
        return MarkovPredictor(markov)
    path = Path(spec)
    config_path = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        config = None  # load_model explains what is wrong
    arch = config.get("arch") if isinstance(config, dict) else None
    if arch == MARKOV:
        return MarkovPredictor(MarkovModel.load(path))
    model = load_model(path, device=device)
    if isinstance(model, SeedLSTM):
        return SeedPredictor(model)
    predictor = LSTMPredictor(model)
    predictor.key_prior, predictor.register_prior = key_prior, register_prior
    predictor.rhythm_temperature = rhythm_temperature
    return predictor


def parameter_count(predictor) -> int | None:
    model = getattr(predictor, "model", None)
    if isinstance(model, torch.nn.Module):
        return sum(p.numel() for p in model.parameters())
    if isinstance(model, MarkovModel):
        return sum(len(c.next) for table in model.tables for c in table.values())
    return None


# --- the evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalSettings:
    primer_notes: int = 32
    continuation_notes: int = 128
    min_continuation: int = 16
    temperature: float = 1.0
    pitch_range: tuple[int, int] = (21, 108)
    seed: int = 0
    max_pieces: int = 0  # 0 = all
    follow: FollowSettings | None = FollowSettings()  # None: no follow section


def likelihoods(predictor, pieces: Sequence[Piece]) -> dict:
    """Mean NLL (nats per note) and pitch top-1/top-5 over notes CONTEXT.. of every piece."""
    pitch_lp, given_lp, true_pitch, other = [], [], [], {"step": [], "duration": [], "velocity": []}
    for piece in pieces:
        rows = np.asarray(piece.notes, dtype=np.float64)
        if len(rows) <= CONTEXT:
            continue
        if hasattr(predictor, "prepare"):  # a chord's notes in the model's order: the same notes, one joint probability
            rows = predictor.prepare(rows)
        scores = predictor.score(rows, CONTEXT)
        truth = np.clip(np.round(rows[CONTEXT:, PITCH]), 0, 127).astype(int)
        pitch_lp.append(scores.pitch)
        true_pitch.append(truth)
        if scores.pitch_given_step is not None:
            given_lp.append(scores.pitch_given_step)
        for name in other:
            value = getattr(scores, name)
            if value is not None:
                other[name].append(value)
    if not pitch_lp:
        return {"notes_scored": 0}
    log_probs, truth = np.concatenate(pitch_lp), np.concatenate(true_pitch)

    def pitch_stats(lp: np.ndarray) -> tuple[float, float, float]:
        nll = -lp[np.arange(len(truth)), truth].mean()
        top5 = np.argsort(-lp, axis=1)[:, :5]
        return float(nll), float((top5[:, 0] == truth).mean()), float((top5 == truth[:, None]).any(axis=1).mean())

    nll, top1, top5 = pitch_stats(log_probs)
    result = {"notes_scored": int(len(truth)), "pitch_nll": round(nll, 4), "pitch_top1": round(top1, 4),
              "pitch_top5": round(top5, 4)}
    if given_lp:
        nll_g, top1_g, top5_g = pitch_stats(np.concatenate(given_lp))
        result.update(pitch_nll_given_step=round(nll_g, 4), pitch_top1_given_step=round(top1_g, 4),
                      pitch_top5_given_step=round(top5_g, 4))
    for name, values in other.items():
        result[f"{name}_nll"] = round(float(-np.concatenate(values).mean()), 4) if values else None
    return result


def continuation_pairs(pieces: Sequence[Piece], settings: EvalSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """(primer rows, real continuation rows) for every piece long enough."""
    pairs = []
    for piece in pieces:
        rows = np.asarray(piece.notes, dtype=np.float64)
        if len(rows) < settings.primer_notes + settings.min_continuation:
            continue
        primer = rows[: settings.primer_notes]
        pairs.append((primer, rows[settings.primer_notes : settings.primer_notes + settings.continuation_notes]))
    return pairs


def invalid_counts(rows: np.ndarray, pitch_range: tuple[int, int]) -> dict[str, int]:
    finite = np.isfinite(rows).all(axis=1)
    return {
        "nonpositive_duration": int(np.sum(~(rows[:, DURATION] > 0))),
        "negative_step": int(np.sum(rows[:, STEP] < 0)),
        "pitch_out_of_range": int(np.sum((rows[:, PITCH] < pitch_range[0]) | (rows[:, PITCH] > pitch_range[1]))),
        "not_finite": int(np.sum(~finite)),
    }


def continuations(predictor, pairs, settings: EvalSettings) -> dict:
    real, generated = [], []
    invalid = {"nonpositive_duration": 0, "negative_step": 0, "pitch_out_of_range": 0, "not_finite": 0}
    for index, (primer, truth) in enumerate(pairs):
        rows = predictor.continue_rows(primer, len(truth), settings.seed + index, settings.temperature, settings.pitch_range)
        for key, value in invalid_counts(rows, settings.pitch_range).items():
            invalid[key] += value
        real.append(array_to_notes(truth))
        generated.append(array_to_notes(np.nan_to_num(rows)))
    invalid["total"] = sum(invalid.values())
    features = metrics.compare_sets(real, generated) if len(pairs) >= 2 else {}
    return {"pieces": len(pairs), "notes_generated": int(sum(len(g) for g in generated)), "features": features,
            "rhythm": metrics.rhythm_summary(generated), "invalid": invalid}


def evaluate(predictors: dict[str, object], pieces: Sequence[Piece], settings: EvalSettings, progress=None) -> dict:
    """Run every predictor on the same pieces -> the JSON-able report's "models" part and the real set's rhythm."""
    if settings.max_pieces and len(pieces) > settings.max_pieces:
        pieces = list(pieces)[: settings.max_pieces]
    pairs = continuation_pairs(pieces, settings)
    calls = follow_pairs(pieces, settings.follow) if settings.follow is not None else []
    report = {}
    for name, predictor in predictors.items():
        if progress:
            progress(f"evaluating {name} ...")
        entry = {"arch": predictor.kind, "parameters": parameter_count(predictor)}
        entry.update(likelihoods(predictor, pieces))
        entry["continuation"] = continuations(predictor, pairs, settings)
        if settings.follow is not None:
            entry["follow"] = follow(predictor, calls, settings.follow)
        report[name] = entry
    real_rhythm = metrics.rhythm_summary([array_to_notes(truth) for _, truth in pairs])
    return {"models": report, "real_continuations": {"pieces": len(pairs), "rhythm": real_rhythm},
            "pieces": len(pieces)}


def format_table(report: dict) -> str:
    """A plain-text table of the main numbers, one column per model."""
    models = report["models"]
    names = list(models)
    rows = [("pitch NLL (nats)", "pitch_nll"), ("pitch NLL | true step", "pitch_nll_given_step"),
            ("pitch top-1", "pitch_top1"), ("pitch top-5", "pitch_top5"), ("step NLL", "step_nll"),
            ("duration NLL", "duration_nll"), ("velocity NLL", "velocity_nll")]
    width = max(16, *(len(n) for n in names)) + 2
    lines = ["metric".ljust(26) + "".join(n.rjust(width) for n in names)]

    def cell(value) -> str:
        if value is None:
            return "-".rjust(width)
        return (f"{value:.3f}" if isinstance(value, float) else str(value)).rjust(width)

    for label, key in rows:
        lines.append(label.ljust(26) + "".join(cell(models[n].get(key)) for n in names))
    features = next((m["continuation"]["features"] for m in models.values() if m["continuation"]["features"]), {})
    for feature in features:
        lines.append(f"OA {feature}"[:26].ljust(26) + "".join(
            cell(models[n]["continuation"]["features"].get(feature, {}).get("overlap")) for n in names))
    lines.append("generated IOI std (s)".ljust(26) + "".join(cell(models[n]["continuation"]["rhythm"]["ioi_std"]) for n in names)
                 + f"   (real {report['real_continuations']['rhythm']['ioi_std']:.3f})")
    lines.append("IOI CV within a piece".ljust(26) + "".join(
        cell(models[n]["continuation"]["rhythm"]["ioi_cv_per_piece"]) for n in names)
                 + f"   (real {report['real_continuations']['rhythm']['ioi_cv_per_piece']:.3f})")
    lines.append("duration CV within piece".ljust(26) + "".join(
        cell(models[n]["continuation"]["rhythm"]["duration_cv_per_piece"]) for n in names)
                 + f"   (real {report['real_continuations']['rhythm']['duration_cv_per_piece']:.3f})")
    lines.append("distinct IOI fraction".ljust(26) + "".join(
        cell(models[n]["continuation"]["rhythm"]["distinct_ioi_fraction"]) for n in names)
                 + f"   (real {report['real_continuations']['rhythm']['distinct_ioi_fraction']:.3f})")
    follows = [models[n].get("follow") for n in names]
    if any(follows):
        for label, key, real in (("follow: tempo slope", "tempo_slope", None), ("follow: tempo error 1x", "tempo_error", "tempo_error_real"),
                                 ("follow: register dist", "register_distance", "register_distance_real"),
                                 ("follow: register slope", "register_slope", None), ("follow: in key", "in_key", "in_key_real"),
                                 ("follow: dynamics slope", "dynamics_slope", None), ("follow: chord share", "chord_share", "chord_share_real")):
            reference = next((f[real] for f in follows if f and real and f.get(real) is not None), None)
            lines.append(label.ljust(26) + "".join(cell((f or {}).get(key)) for f in follows)
                         + (f"   (real {reference:.3f})" if reference is not None else ""))
    lines.append("invalid outputs".ljust(26) + "".join(cell(models[n]["continuation"]["invalid"]["total"]) for n in names))
    return "\n".join(lines)
