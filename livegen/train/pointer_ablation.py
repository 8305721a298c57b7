"""`python -m livegen.train.pointer_ablation`: a session memory *trained* to copy (issue 13).

Every memory measured in livegen.train.memory_ablation is fixed by hand: n-gram tables over the
piece so far, mixed with the LSTM by a weight that reads a few features.  This one is learned
from the corpus instead, as Merity et al.'s pointer sentinel is: on top of the frozen LSTM,
attention heads compare the summary before the next note with the summary before every earlier
note of the piece and copy what followed there, and a gate learned from the summary (and the
heads' sharpness and the memory's confidence) mixes the LSTM, the shipped memory and the heads.

A head copies with an offset ``r``: ``r = 0`` copies the earlier note's pitch itself; ``r > 0``
copies its interval from the note ``r`` before it, applied to the note ``r`` before the one
predicted.  Read chord by chord, four voices put a voice's previous note about four notes back,
so offsets 1-4 let a head follow a voice's motion through the interleaved stream.

The pointer is trained on a random sample of the model's training pieces (each cut to ``--crop``
notes, for time), and scored as ``livegen eval --session-memory`` scores: from note CONTEXT on,
each piece one session, copying only from its earlier notes.  The figure is pitch NLL of the
mixture / pitch NLL of the LSTM alone, on the validation and test pieces, by collection.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch import nn

from livegen.notes import PITCH
from livegen.train.session_eval import CONTEXT, memory_pitch_probs

OFFSETS = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class PieceTerms:
    """What the pointer reads of one piece: ``summaries[k]`` is the LSTM's summary before note
    k + 1; ``lstm``, ``memory`` and ``confidence`` are per scored note (CONTEXT..)."""

    summaries: torch.Tensor  # (N - 1, hidden)
    pitches: torch.Tensor  # (N,) long
    lstm: torch.Tensor  # (n,) P_lstm(truth)
    memory: torch.Tensor  # (n,) P_mem(truth), the shipped memory
    confidence: torch.Tensor  # (n,) the shipped memory's confidence
    group: str = ""

    def crop(self, limit: int) -> "PieceTerms":
        """The piece's first ``limit`` notes (training time grows with the square of the length)."""
        if len(self.pitches) <= limit:
            return self
        n = limit - CONTEXT
        return replace(self, summaries=self.summaries[: limit - 1], pitches=self.pitches[:limit],
                       lstm=self.lstm[:n], memory=self.memory[:n], confidence=self.confidence[:n])


def piece_terms(predictor, rows: np.ndarray, group: str = "") -> PieceTerms:
    """The LSTM's summaries and pitch marginal, and the shipped memory's prediction, for one piece
    (rows in the model's chord order, longer than CONTEXT)."""
    scores = predictor.score(rows, CONTEXT)
    pitches = torch.as_tensor(np.clip(np.round(rows[:, PITCH]), 0, 127).astype(np.int64))
    memory, confidence = memory_pitch_probs(rows, CONTEXT)
    truth = pitches[CONTEXT:].numpy()
    scored = np.arange(len(truth))
    return PieceTerms(summaries=torch.from_numpy(scores.summaries), pitches=pitches,
                      lstm=torch.as_tensor(np.exp(scores.pitch[scored, truth]), dtype=torch.float32),
                      memory=torch.as_tensor(memory[scored, truth], dtype=torch.float32),
                      confidence=torch.as_tensor(confidence, dtype=torch.float32), group=group)


def copy_masks(pitches: torch.Tensor, offsets: Sequence[int] = OFFSETS) -> torch.Tensor:
    """(heads, n, N - 1) bool: for scored note i (CONTEXT..) and earlier note j (1..), whether head
    r's copy of j gives i's pitch (r = 0: the same pitch; r > 0: the same interval from the note
    r before).  Only j < i, and j - r >= 0, may be copied."""
    n_notes = len(pitches)
    i = torch.arange(CONTEXT, n_notes)[:, None]
    j = torch.arange(1, n_notes)[None, :]
    truth = pitches[CONTEXT:]
    masks = []
    for r in offsets:
        if r == 0:
            same = pitches[1:][None, :] == truth[:, None]
        else:
            moved = pitches[1:] - pitches[(torch.arange(1, n_notes) - r).clamp_min(0)]
            wanted = truth - pitches[CONTEXT - r : n_notes - r]
            same = (moved[None, :] == wanted[:, None]) & (j - r >= 0)
        masks.append(same & (j < i))
    return torch.stack(masks)


class CopyPointer(nn.Module):
    """Attention heads that copy from the piece so far, and a gate over LSTM, memory and heads."""

    def __init__(self, hidden: int, offsets: Sequence[int] = OFFSETS, width: int = 32, gate_hidden: int = 64) -> None:
        super().__init__()
        self.offsets, self.width = tuple(offsets), width
        heads = len(self.offsets)
        self.query, self.key = nn.Linear(hidden, width * heads), nn.Linear(hidden, width * heads)
        self.gate = nn.Sequential(nn.Linear(hidden + 2 * heads + 2, gate_hidden), nn.GELU(),
                                  nn.Linear(gate_hidden, 2 + heads))

    def forward(self, terms: PieceTerms) -> torch.Tensor:
        """Per scored note: -log P_mixture(truth)."""
        summaries, n_notes, heads = terms.summaries, len(terms.pitches), len(self.offsets)
        n = n_notes - CONTEXT
        query = self.query(summaries[CONTEXT - 1 :]).view(n, heads, self.width)
        key = self.key(summaries).view(n_notes - 1, heads, self.width)
        scores = torch.einsum("ihd,jhd->hij", query, key) / self.width**0.5
        i = torch.arange(CONTEXT, n_notes)[:, None]
        j = torch.arange(1, n_notes)[None, :]
        scores = scores.masked_fill(~((j < i) & (j - max(self.offsets) >= 0)), -1e9)
        attention = torch.softmax(scores, -1)
        copied = (attention * copy_masks(terms.pitches, self.offsets)).sum(-1).T  # (n, heads)
        sharpness = scores.max(-1).values.T / 10
        spread = -(attention * attention.clamp_min(1e-12).log()).sum(-1).T / 5
        features = torch.cat([summaries[CONTEXT - 1 :], sharpness, spread, terms.confidence[:, None],
                              torch.log1p(i.float()) / 5], 1)
        log_gate = torch.log_softmax(self.gate(features), -1)
        parts = torch.cat([terms.lstm[:, None], terms.memory[:, None], copied], 1).clamp_min(1e-12).log()
        return -torch.logsumexp(log_gate + parts, 1)


def train_pointer(terms: Sequence[PieceTerms], epochs: int, seed: int = 0, crop: int = 600,
                  offsets: Sequence[int] = OFFSETS, lr: float = 1e-3, log=None) -> CopyPointer:
    """Adam, one piece a step, ``epochs`` passes over ``terms`` in a seeded order."""
    torch.manual_seed(seed)
    pointer = CopyPointer(terms[0].summaries.shape[1], offsets)
    optimizer = torch.optim.Adam(pointer.parameters(), lr)
    cropped = [t.crop(crop) for t in terms]
    for epoch in range(epochs):
        started, total = time.monotonic(), 0.0
        for index in torch.randperm(len(cropped)).tolist():
            loss = pointer(cropped[index]).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        if log:
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(cropped):.4f}, {time.monotonic() - started:.0f} s")
    return pointer


@torch.no_grad()
def ratios(pointer: CopyPointer, terms: Sequence[PieceTerms]) -> dict:
    """Pitch NLL of the mixture / of the LSTM alone, over all pieces and by group."""
    sums: dict[str, list[float]] = {}
    for t in terms:
        nll, alone = pointer(t).sum().item(), -t.lstm.log().sum().item()
        for name in ("all", t.group):
            entry = sums.setdefault(name, [0.0, 0.0])
            entry[0], entry[1] = entry[0] + nll, entry[1] + alone
    whole = sums.pop("all")
    return {"ratio": round(whole[0] / whole[1], 4),
            "by_group": {name: round(a / b, 4) for name, (a, b) in sorted(sums.items()) if name}}


def main(argv: Sequence[str] | None = None) -> int:
    from livegen.train.data import read_split
    from livegen.train.evaluate import load_predictor
    from livegen.train.memory_ablation import collection, prepared_pieces

    parser = argparse.ArgumentParser(prog="python -m livegen.train.pointer_ablation", description=__doc__.split("\n")[0])
    parser.add_argument("model", nargs="?", default="models/default", help="a note-lstm model folder with a split.json")
    parser.add_argument("--train-pieces", type=int, default=3000, help="training pieces drawn at random (seeded)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--crop", type=int, default=600, help="train on each piece's first N notes")
    parser.add_argument("--offsets", default=",".join(map(str, OFFSETS)), help="the heads' copy offsets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    predictor = load_predictor(args.model, torch.device("cpu"))
    split = read_split(args.model)

    def terms_of(ids: list[str]) -> list[PieceTerms]:
        return [piece_terms(predictor, rows, collection(name)) for name, rows in prepared_pieces(predictor, ids)]

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    train_ids = list(split["train"])
    random.Random(args.seed + 1).shuffle(train_ids)
    started = time.monotonic()
    train = terms_of(train_ids[: args.train_pieces])
    say(f"{len(train)} training pieces read in {time.monotonic() - started:.0f} s")
    pointer = train_pointer(train, args.epochs, args.seed, args.crop, [int(v) for v in args.offsets.split(",")], log=say)
    report = {"model": args.model, "train_pieces": len(train), "epochs": args.epochs, "crop": args.crop,
              "offsets": list(pointer.offsets), "minutes_to_train": round((time.monotonic() - started) / 60, 1)}
    for name in ("validation", "test"):
        report[name] = ratios(pointer, terms_of(split[name]))
    json.dump(report, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
