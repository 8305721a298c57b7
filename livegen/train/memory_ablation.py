"""`python -m livegen.train.memory_ablation`: what else was tried for the session memory's blend.

Issue 13 asks for pitch NLL with memory at most 0.85x without on the test split.  The shipped
blend (an interpolated PPM over intervals, weighted by its confidence, livegen.model.blend) gives
0.903x there with release 0.4; this module measures the alternatives on the same pieces (and
livegen.train.pointer_ablation a memory trained to copy), each scored as one session exactly as
``livegen eval --session-memory`` does (from note CONTEXT on, the memory built from the piece's
earlier notes only), so the figures in the README can be reproduced:

* ``shipped``: the live blend at knob W (``blend_weight`` of the memory's confidence);
* ``fixed``: a fixed weight W for every note;
* ``oracle_fixed``: the best fixed weight chosen per piece *after* seeing it (a bound that no
  weighting without look-ahead reaches);
* ``oracle_per_note``: the better of P_lstm and P_mem for every note, chosen after seeing it: no
  mixture of the two, whatever its weight per note, scores lower (``..._with_cache`` adds the
  naive cache as a third choice);
* ``learned_gate`` (``--learned-gate SPLIT``): a logistic gate over eight features of each note
  (the memory's confidence, both models' top probability and entropy, how much they agree...),
  fitted on SPLIT's pieces and scored here: how far a weight that reads more than the memory's
  confidence could go;
* ``evidence``: the shipped weight moved by a decaying sum of log(P_mem / P_lstm) of the notes
  already heard (a fixed-share-like Bayesian weight);
* ``order_K`` / ``context_rhythm``: other memory configurations under the shipped weight;
* ``absolute_cache``: the shipped blend mixed with the naive absolute-pitch 4-gram cache
  (session_eval.PitchCache) at fixed weights, a second memory view;
* ``neural_cache``: Grave et al.'s neural cache mixed into the shipped blend at fixed shares: the
  pitches that followed earlier notes, weighted by softmax(theta · cosine) of the LSTM's own
  summaries (``neural_cache_probs``), so a context that *sounds* alike counts, not only the same
  intervals;
* ``voice_lines``: a second view of the memory for polyphony, mixed into the shipped memory at
  fixed shares (``voice_line_probs``): each note belongs to the line of its rank in its chord;
* ``dynamic`` (``--dynamic``, slow): dynamic evaluation, SGD on every weight of the LSTM over the
  piece so far every ``--chunk`` notes, alone and under the shipped blend;
* ``dynamic_segment`` (``--dynamic-segment``): dynamic evaluation as Krause et al. run it, each
  segment of ``--chunk`` notes scored with the carried state and then learned from, one Adam step
  at ``--segment-lr`` on its pitch loss.

Every figure is a ratio: pitch NLL of the variant / pitch NLL of the LSTM alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from typing import Sequence

import numpy as np

from livegen.model.blend import blend_weight
from livegen.model.memory import MemoryConfig
from livegen.notes import PITCH, STEP
from livegen.train.session_eval import CONTEXT, PitchCache, memory_pitch_probs, naive_cache_probs

WEIGHTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _true(probs: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return probs[np.arange(len(truth)), truth].astype(np.float64)


def _entropy(p: np.ndarray) -> np.ndarray:
    p = np.maximum(p, 1e-12)
    return -(p * np.log(p)).sum(axis=1)


GATE_FEATURES = ("confidence", "log max P_mem", "entropy P_mem", "log max P_lstm", "entropy P_lstm",
                 "log sum P_lstm P_mem", "log position", "log P_lstm(argmax P_mem)")


def piece_terms(predictor, rows: np.ndarray, config: MemoryConfig | None = None) -> dict[str, np.ndarray]:
    """Per scored note: P_lstm(truth), P_mem(truth), the memory's confidence, P_cache(truth), and
    the GATE_FEATURES (all known before the note) for ``learned_gate``."""
    truth = np.clip(np.round(rows[CONTEXT:, PITCH]), 0, 127).astype(int)
    lstm = np.exp(predictor.score(rows, CONTEXT).pitch)
    memory, confidence = memory_pitch_probs(rows, CONTEXT, config)
    features = np.stack([confidence, np.log(memory.max(axis=1)), _entropy(memory), np.log(lstm.max(axis=1)),
                         _entropy(lstm), np.log((lstm * memory).sum(axis=1) + 1e-12),
                         np.log1p(np.arange(CONTEXT, len(rows))),
                         np.log(lstm[np.arange(len(truth)), memory.argmax(axis=1)] + 1e-12)], axis=1)
    return {"lstm": _true(lstm, truth), "memory": _true(memory, truth), "confidence": confidence,
            "cache": _true(naive_cache_probs(rows, CONTEXT), truth), "features": features}


def learned_gate(fit: Sequence[dict], score: Sequence[dict]) -> dict:
    """A logistic gate w = sigmoid(theta . features + b) fitted by L-BFGS on the mixture's pitch NLL
    over ``fit`` (piece_terms of some pieces), and its ratio on ``score`` (and on ``fit``)."""
    import torch

    def stacked(terms: Sequence[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tuple(np.concatenate([t[k] for t in terms]) for k in ("features", "lstm", "memory"))  # type: ignore[return-value]

    x_fit, lstm_fit, memory_fit = stacked(fit)
    mean, scale = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-9
    theta = torch.zeros(x_fit.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    x, lstm, memory = (torch.tensor(a, dtype=torch.float64) for a in ((x_fit - mean) / scale, lstm_fit, memory_fit))
    optimizer = torch.optim.LBFGS([theta, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        w = torch.sigmoid(x @ theta + bias)
        loss = -torch.log((1 - w) * lstm + w * memory).mean() + 1e-4 * (theta ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    weights = theta.detach().numpy()

    def ratio(terms: Sequence[dict]) -> float:
        features, p_lstm, p_memory = stacked(terms)
        w = 1.0 / (1.0 + np.exp(-((features - mean) / scale @ weights + bias.item())))
        return round(_nll((1 - w) * p_lstm + w * p_memory) / _nll(p_lstm), 4)

    return {"fitted_on": ratio(fit), "scored": ratio(score),
            "theta": {name: round(float(v), 3) for name, v in zip(GATE_FEATURES, weights)}}


def _nll(p: np.ndarray) -> float:
    return float(-np.log(np.maximum(p, 1e-300)).sum())


def evidence_weights(terms: dict, knob: float, beta: float, decay: float) -> np.ndarray:
    """The shipped weight, its logit moved by beta times a decaying sum of log(P_mem / P_lstm)."""
    out, evidence = np.empty(len(terms["lstm"])), 0.0
    base = np.log(knob / (1.0 - knob))
    shipped = np.array([blend_weight(knob, c) for c in terms["confidence"]])
    for t, w in enumerate(shipped):
        logit = np.log(w / (1.0 - w)) if 0.0 < w < 1.0 else base
        out[t] = 1.0 / (1.0 + np.exp(-(logit + beta * evidence)))
        evidence = decay * evidence + np.log(max(terms["memory"][t], 1e-12) / max(terms["lstm"][t], 1e-12))
    return out


def dynamic_lstm_probs(model, rows: np.ndarray, lr: float, steps: int, chunk: int) -> np.ndarray:
    """P_lstm(truth) under dynamic evaluation: before each chunk of notes, ``steps`` SGD steps on
    the training loss of the piece so far, then the chunk scored by the adapted model."""
    import torch
    import torch.nn.functional as F

    from livegen.train.evaluate import LSTMPredictor
    from livegen.model.tokens import FIELDS

    adapted = copy.deepcopy(model)
    predictor = LSTMPredictor(adapted)
    optimizer = torch.optim.SGD(adapted.parameters(), lr=lr)
    tokens = torch.as_tensor(predictor.tokenizer.encode(rows))
    truth = np.clip(np.round(rows[CONTEXT:, PITCH]), 0, 127).astype(int)
    out = np.empty(len(truth))
    for start in range(CONTEXT, len(rows), chunk):
        for _ in range(steps):
            optimizer.zero_grad()
            logits, _ = adapted(tokens[None, : start - 1], tokens[None, 1:start])
            loss = sum(F.cross_entropy(getattr(logits, name)[0].float(), tokens[1:start, column])
                       for column, name in enumerate(FIELDS))
            loss.backward()
            optimizer.step()
        stop = min(start + chunk, len(rows))
        scored = np.exp(predictor.score(rows[:stop], CONTEXT).pitch)
        index = np.arange(start - CONTEXT, stop - CONTEXT)
        out[index] = scored[index, truth[index]]
    return out


def voice_line_probs(predictor, rows: np.ndarray, order: int = 3, limit: int = 24,
                     chord: np.ndarray | None = None) -> np.ndarray:
    """P(truth) for notes CONTEXT.. under a voice-line view of the memory.

    Each note belongs to the line of its rank in its chord, in the order the model reads chords
    (top note first for the shipped model).  One interpolated n-gram table over intervals (a
    PitchCache over interval symbols), shared by every line so that a motif passed between voices
    matches, reads each line's own last intervals.  A chord note comes from the next rank's line (beyond the note before it), a new
    onset from the top line, mixed by the LSTM's probability of a chord step (or by ``chord``, one
    probability per scored note)."""
    import torch

    from livegen.model.memory import interval_pitches

    if chord is None:
        model = predictor.model
        tokens = torch.as_tensor(predictor.tokenizer.encode(rows))
        with torch.no_grad():
            h, _ = model.encode(tokens.unsqueeze(0))
            chord = torch.softmax(model.step_head(h[0, CONTEXT - 1 : len(rows) - 1]).float(), -1)[:, 0].numpy()
    table = PitchCache(order)  # symbols: interval + limit
    lines: dict[int, tuple[int, list[int]]] = {}  # rank -> (last pitch, interval symbols)
    pitches = np.clip(np.round(rows[:, PITCH]), 0, 127).astype(int)
    chord_seconds = predictor.tokenizer.config.chord_seconds
    descending = predictor.tokenizer.config.chord_order == "descending"
    out, rank = np.empty(len(rows) - CONTEXT), -1

    def line_probs(r: int) -> np.ndarray:
        if not lines:
            return np.full(128, 1.0 / 128)
        last, history = lines.get(r) or lines[min(lines, key=lambda k: abs(k - r))]
        table.pitches = history
        return interval_pitches(table.probs()[: 2 * limit + 1], last, limit)

    for i, pitch in enumerate(pitches):
        if i >= CONTEXT:
            beside = line_probs(rank + 1)
            if descending:
                beside[pitches[i - 1]:] = 0.0
            else:
                beside[: pitches[i - 1] + 1] = 0.0
            beside = beside / beside.sum() if beside.sum() > 0 else np.full(128, 1.0 / 128)
            c = chord[i - CONTEXT]
            out[i - CONTEXT] = c * beside[pitch] + (1.0 - c) * line_probs(0)[pitch]
        rank = rank + 1 if i > 0 and rows[i, STEP] < chord_seconds else 0
        if rank in lines:
            last, history = lines[rank]
            table.pitches = history
            table.observe(int(np.clip(pitch - last, -limit, limit)) + limit)
            lines[rank] = (int(pitch), table.pitches[-8:])
        else:
            lines[rank] = (int(pitch), [])
    return out


def segment_dynamic_probs(model, rows: np.ndarray, lr: float, segment: int) -> np.ndarray:
    """P_lstm(truth) under dynamic evaluation as Krause et al. (2018) run it: the piece in segments
    of ``segment`` notes, the recurrent state carried, each segment scored by the model as it is
    and then learned from (one Adam step on its pitch loss, every weight)."""
    import torch
    import torch.nn.functional as F

    from livegen.model.tokens import Tokenizer
    from livegen.train.evaluate import log_pitch_marginal

    adapted = copy.deepcopy(model).eval()
    optimizer = torch.optim.Adam(adapted.parameters(), lr=lr)
    tokens = torch.as_tensor(Tokenizer(model.config.tokens).encode(rows))
    out, state = np.full(len(rows), np.nan), None
    for a in range(1, len(rows), segment):
        b = min(a + segment, len(rows))
        target = tokens[a:b]
        h, next_state = adapted.encode(tokens[None, a - 1 : b - 1], state)
        previous = tokens[a - 1 : b - 1, 0]
        logits = adapted.heads(h[0], target, previous)
        with torch.no_grad():
            marginal = log_pitch_marginal(adapted, h[0], torch.log_softmax(logits.step.float(), -1), previous)
            out[a:b] = marginal.gather(-1, target[:, :1]).squeeze(-1).exp().numpy()
        optimizer.zero_grad()
        F.cross_entropy(logits.pitch.float(), target[:, 0]).backward()
        optimizer.step()
        state = tuple(x.detach() for x in next_state)
    return out[CONTEXT:]


def neural_cache_probs(predictor, rows: np.ndarray, theta: float) -> np.ndarray:
    """P_cache(truth) per scored note: the query is the summary before note i, each key the
    summary before an earlier note j, whose pitch it votes for with softmax(theta · cosine)."""
    import torch

    with torch.no_grad():
        tokens = torch.as_tensor(predictor.tokenizer.encode(rows), device=predictor.device)
        h = predictor.model.encode(tokens.unsqueeze(0))[0][0].float().cpu().numpy()  # after each note
    unit = h / np.maximum(np.linalg.norm(h, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    pitches = np.clip(np.round(rows[:, PITCH]), 0, 127).astype(int)
    out = np.empty(len(rows) - CONTEXT)
    for k, i in enumerate(range(CONTEXT, len(rows))):
        scores = theta * similarity[i - 1, : i - 1]  # keys: the summaries before notes 1 .. i-1
        attention = np.exp(scores - scores.max())
        out[k] = attention[pitches[1:i] == pitches[i]].sum() / attention.sum()
    return out


def collection(piece_id: str) -> str:
    """``music21:bach/bwv1.6#0`` -> ``music21:bach``: the corpus collection (or folder) of a piece."""
    return str(piece_id).split("/")[0]


def ablation(predictor, pieces: Sequence[np.ndarray], knob: float = 0.5, dynamic: dict | None = None,
             segment: dict | None = None, groups: Sequence[str] | None = None,
             gate_fit: Sequence[dict] | None = None) -> dict:
    """The ratios of the module doc on ``pieces`` (note arrays in the model's chord order);
    ``groups`` (one name per piece) adds the shipped blend's ratio per group (``by_group``);
    ``gate_fit`` (piece_terms of other pieces) adds ``learned_gate`` fitted on them."""
    terms = [piece_terms(predictor, rows) for rows in pieces]
    lstm = np.concatenate([t["lstm"] for t in terms])
    base = _nll(lstm)

    def ratio(p: np.ndarray) -> float:
        return round(_nll(p) / base, 4)

    shipped_w = [np.array([blend_weight(knob, c) for c in t["confidence"]]) for t in terms]
    shipped = np.concatenate([(1 - w) * t["lstm"] + w * t["memory"] for t, w in zip(terms, shipped_w)])
    memory = np.concatenate([t["memory"] for t in terms])
    result: dict = {"pieces": len(terms), "notes": int(len(lstm)), "knob": knob,
                    "pitch_nll_without": round(base / len(lstm), 4), "shipped": ratio(shipped),
                    "fixed": {str(w): ratio((1 - w) * lstm + w * memory) for w in WEIGHTS}}
    if groups is not None:
        chord_seconds = predictor.tokenizer.config.chord_seconds
        result["by_group"] = {}
        for name in sorted(set(groups)):
            chosen = [i for i, g in enumerate(groups) if g == name]
            alone = np.concatenate([terms[i]["lstm"] for i in chosen])
            mixed = np.concatenate([(1 - shipped_w[i]) * terms[i]["lstm"] + shipped_w[i] * terms[i]["memory"] for i in chosen])
            result["by_group"][name] = {"pieces": len(chosen), "notes": int(len(alone)),
                                        "chord_share": round(float(np.mean([np.mean(pieces[i][1:, STEP] < chord_seconds)
                                                                            for i in chosen])), 3),
                                        "pitch_nll_without": round(_nll(alone) / len(alone), 4),
                                        "shipped": round(_nll(mixed) / _nll(alone), 4)}
    oracle = 0.0
    for t in terms:
        oracle += min(_nll((1 - w) * t["lstm"] + w * t["memory"]) for w in np.linspace(0.0, 1.0, 21))
    result["oracle_fixed"] = round(oracle / base, 4)
    result["oracle_per_note"] = ratio(np.maximum(lstm, memory))
    result["oracle_per_note_with_cache"] = ratio(np.maximum.reduce([lstm, memory, np.concatenate([t["cache"] for t in terms])]))
    if gate_fit is not None:
        result["learned_gate"] = learned_gate(gate_fit, terms)
    result["evidence"] = {}
    for beta in (0.1, 0.2, 0.3):
        for decay in (0.5, 0.7, 0.85):
            mixed = np.concatenate([(1 - w) * t["lstm"] + w * t["memory"]
                                    for t in terms for w in [evidence_weights(t, knob, beta, decay)]])
            result["evidence"][f"beta {beta} decay {decay}"] = ratio(mixed)
    for name, config in (("order_4", MemoryConfig(order=4)), ("order_8", MemoryConfig(order=8)),
                         ("context_rhythm", MemoryConfig(context_rhythm=True))):
        mixed = []
        for rows, t in zip(pieces, terms):
            other, confidence = memory_pitch_probs(rows, CONTEXT, config)
            truth = np.clip(np.round(rows[CONTEXT:, PITCH]), 0, 127).astype(int)
            w = np.array([blend_weight(knob, c) for c in confidence])
            mixed.append((1 - w) * t["lstm"] + w * _true(other, truth))
        result[name] = ratio(np.concatenate(mixed))
    cache = np.concatenate([t["cache"] for t in terms])
    result["absolute_cache"] = {str(a): ratio((1 - a) * shipped + a * cache) for a in (0.05, 0.1, 0.15, 0.2, 0.3)}
    result["neural_cache"] = {}
    for theta in (10.0, 40.0):
        neural = np.concatenate([neural_cache_probs(predictor, rows, theta) for rows in pieces])
        for a in (0.05, 0.1, 0.2):
            result["neural_cache"][f"theta {theta:g} share {a}"] = ratio((1 - a) * shipped + a * neural)
    voices = [voice_line_probs(predictor, rows) for rows in pieces]
    result["voice_lines"] = {str(a): ratio(np.concatenate([(1 - w) * t["lstm"] + w * ((1 - a) * t["memory"] + a * v)
                                                           for t, w, v in zip(terms, shipped_w, voices)]))
                             for a in (0.2, 0.35, 0.5)}
    if segment:
        adapted = np.concatenate([segment_dynamic_probs(predictor.model, rows, **segment) for rows in pieces])
        both = np.concatenate(shipped_w)
        result["dynamic_segment"] = {**segment, "alone": ratio(adapted),
                                     "with_memory": ratio((1 - both) * adapted + both * memory)}
    if dynamic:
        adapted = np.concatenate([dynamic_lstm_probs(predictor.model, rows, **dynamic) for rows in pieces])
        both = np.concatenate(shipped_w)
        result["dynamic"] = {**dynamic, "alone": ratio(adapted),
                             "with_memory": ratio((1 - both) * adapted + both * memory)}
    return result


def prepared_pieces(predictor, ids: Sequence[str]) -> list[tuple[str, np.ndarray]]:
    """The pieces ``ids`` (from the ingest cache), as (id, rows in the model's order), longer than
    CONTEXT so that each has notes to score."""
    from livegen.train.data import default_cache_dir, file_of, ingest, select

    ingested = ingest(list(dict.fromkeys(file_of(p) for p in ids)), default_cache_dir(), 2, progress=False)
    chosen = [(p.id, predictor.prepare(np.asarray(p.notes, dtype=np.float64))) for p in select(ingested.pieces, ids)]
    return [(name, rows) for name, rows in chosen if len(rows) > CONTEXT]


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from livegen.train.data import read_split
    from livegen.train.evaluate import load_predictor

    parser = argparse.ArgumentParser(prog="python -m livegen.train.memory_ablation", description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="models/default", help="a note-lstm model folder with a split.json")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--knob", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=0, help="score only the first N pieces (0: all)")
    parser.add_argument("--dynamic", action="store_true", help="also measure dynamic evaluation (slow)")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--dynamic-segment", action="store_true", help="also measure Krause-style dynamic evaluation")
    parser.add_argument("--segment-lr", type=float, default=3e-4)
    parser.add_argument("--learned-gate", metavar="SPLIT", choices=("train", "validation", "test"),
                        help="also fit a logistic gate on SPLIT's pieces and score it on --split's")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    predictor = load_predictor(args.model, torch.device("cpu"))

    def split_pieces(split: str) -> list[tuple[str, np.ndarray]]:
        return prepared_pieces(predictor, read_split(args.model)[split])[: args.limit or None]

    chosen = split_pieces(args.split)
    pieces = [rows for _, rows in chosen]
    dynamic = {"lr": args.lr, "steps": args.steps, "chunk": args.chunk} if args.dynamic else None
    segment = {"lr": args.segment_lr, "segment": args.chunk} if args.dynamic_segment else None
    gate_fit = [piece_terms(predictor, rows) for _, rows in split_pieces(args.learned_gate)] if args.learned_gate else None
    report = ablation(predictor, pieces, args.knob, dynamic, segment, [collection(name) for name, _ in chosen], gate_fit)
    if args.learned_gate:
        report["learned_gate"] = {"fit_split": args.learned_gate, **report["learned_gate"]}
    json.dump({"model": args.model, "split": args.split, **report}, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
