"""A variable-order Markov model over notes, in the style of Pachet's Continuator.

Contexts are the last 1..``order`` pitches; what follows a context is a whole note token (pitch,
step bin, duration bin, velocity bin, the same bins as the LSTM's), counted every time it is seen.

* Sampling (the Continuator): find the longest context of the recent pitches that has been seen,
  and draw one of the notes that followed it, in proportion to count^(1/temperature); back off to
  shorter contexts (down to the overall note counts) when nothing matches.
* Probabilities (for evaluation): Witten-Bell interpolation of every order down to a uniform
  distribution, so no note ever has probability zero:
  P_k(x) = (c_k(x) + T_k · P_{k-1}(x)) / (n_k + T_k), with n_k the context's count and T_k its
  number of distinct continuations.

It learns online (``observe`` rows as they are played, ``reset`` at a new piece) which is the
daemon's "learn from me" mode, and saves to JSON, never pickle.  numpy only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from livegen.errors import ModelError
from livegen.jsonfile import read_json
from livegen.model.tokens import Tokenizer, TokenConfig

ARCH = "markov"
COUNTS_FILE = "markov.json"
FORMAT = "livegen-markov"
FORMAT_VERSION = 1

Token = tuple[int, int, int, int]  # pitch, step bin, duration bin, velocity bin


@dataclass(frozen=True)
class MarkovConfig:
    order: int = 4
    tokens: TokenConfig = field(default_factory=TokenConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.order, int) or not 1 <= self.order <= 16:
            raise ValueError(f"order must be an integer in 1..16, got {self.order!r}")

    def to_dict(self) -> dict:
        return {"order": self.order, "tokens": self.tokens.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> "MarkovConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown markov config keys: {', '.join(unknown)}")
        return cls(order=data.get("order", 4), tokens=TokenConfig.from_dict(data.get("tokens", {})))


class _Counts:
    """What followed one context: whole tokens, and their per-field marginals."""

    __slots__ = ("next", "fields", "total")

    def __init__(self) -> None:
        self.next: dict[Token, int] = {}
        self.fields: tuple[dict[int, int], ...] = ({}, {}, {}, {})
        self.total = 0

    def add(self, token: Token, count: int = 1) -> None:
        self.next[token] = self.next.get(token, 0) + count
        for marginal, value in zip(self.fields, token):
            marginal[value] = marginal.get(value, 0) + count
        self.total += count


class MarkovModel:
    def __init__(self, config: MarkovConfig | None = None) -> None:
        self.config = config = config or MarkovConfig()
        self.tokenizer = Tokenizer(config.tokens)
        self.sizes = self.tokenizer.sizes
        # tables[k]: context of the last k pitches -> counts; tables[0] has the one key ().
        self.tables: list[dict[tuple[int, ...], _Counts]] = [{} for _ in range(config.order + 1)]
        self.history: list[int] = []  # recent pitches of the piece being observed

    @property
    def notes_seen(self) -> int:
        counts = self.tables[0].get(())
        return counts.total if counts else 0

    # --- learning --------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new piece: the next observed note has no context."""
        self.history = []

    def observe(self, rows: np.ndarray) -> None:
        """Learn from notes (N, 4) (pitch, step, duration, velocity) that follow the ones seen so far."""
        rows = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        order = self.config.order
        for token in map(tuple, self.tokenizer.encode(rows).tolist()):
            history = self.history
            for k in range(min(order, len(history)) + 1):
                context = tuple(history[len(history) - k :]) if k else ()
                counts = self.tables[k].get(context)
                if counts is None:
                    counts = self.tables[k][context] = _Counts()
                counts.add(token)
            history.append(token[0])
            if len(history) > order:
                del history[0]

    def fit(self, pieces) -> "MarkovModel":
        """Observe each (N, 4) array as its own piece."""
        for rows in pieces:
            self.reset()
            self.observe(rows)
        self.reset()
        return self

    # --- prediction ------------------------------------------------------------------------------

    def _contexts(self, pitches) -> list[_Counts | None]:
        pitches = [int(p) for p in pitches][-self.config.order :] if len(pitches) else []
        found = [self.tables[0].get(())]
        for k in range(1, len(pitches) + 1):
            found.append(self.tables[k].get(tuple(pitches[len(pitches) - k :])))
        return found

    def probabilities(self, context_pitches, field: int = 0) -> np.ndarray:
        """P(field of the next note | last pitches): Witten-Bell interpolated, (classes,) summing to 1.

        field: 0 pitch, 1 step bin, 2 duration bin, 3 velocity bin.
        """
        size = self.sizes[field]
        probs = np.full(size, 1.0 / size)
        for counts in self._contexts(context_pitches):
            if counts is None:
                break  # a longer context than an unseen one is unseen too
            marginal = counts.fields[field]
            dense = np.zeros(size)
            dense[list(marginal)] = list(marginal.values())
            distinct = len(marginal)
            probs = (dense + distinct * probs) / (counts.total + distinct)
        return probs

    def sample(
        self,
        context_pitches,
        rng: np.random.Generator,
        temperature: float = 1.0,
        pitch_low: int = 0,
        pitch_high: int = 127,
    ) -> Token:
        """Draw the next token from the longest seen context (the Continuator's rule)."""
        for counts in reversed(self._contexts(context_pitches)):
            if counts is None:
                continue
            options = [t for t in counts.next if pitch_low <= t[0] <= pitch_high]
            if not options:
                continue
            weights = np.array([counts.next[t] for t in options], dtype=np.float64)
            if temperature == 0:
                return options[int(weights.argmax())]
            weights = weights ** (1.0 / temperature)
            return options[int(rng.choice(len(options), p=weights / weights.sum()))]
        raise ModelError("the Markov model has seen no notes in the pitch range; observe some first")

    def continue_rows(
        self,
        primer: np.ndarray,
        length: int,
        rng: np.random.Generator,
        temperature: float = 1.0,
        pitch_low: int = 0,
        pitch_high: int = 127,
    ) -> np.ndarray:
        """Sample ``length`` note rows (pitch, step, duration, velocity in seconds) after ``primer``."""
        pitches = [int(round(p)) for p in np.asarray(primer).reshape(-1, 4)[:, 0]]
        tokens = []
        for _ in range(length):
            token = self.sample(pitches, rng, temperature, pitch_low, pitch_high)
            tokens.append(token)
            pitches.append(token[0])
        return self.tokenizer.decode(np.array(tokens, dtype=np.int64).reshape(-1, 4))

    # --- files -----------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        """Write config.json (arch "markov") and markov.json (the counts) into ``directory``."""
        from livegen import __version__

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tables = [
            [[list(context), [[*token, n] for token, n in counts.next.items()]] for context, counts in table.items()]
            for table in self.tables
        ]
        counts = {"format": FORMAT, "format_version": FORMAT_VERSION, "tables": tables}
        (directory / COUNTS_FILE).write_text(json.dumps(counts, separators=(",", ":")))
        config = {
            "format": "livegen-model",
            "format_version": 1,
            "arch": ARCH,
            "livegen_version": __version__,
            "config": self.config.to_dict(),
            **(extra or {}),
        }
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "MarkovModel":
        directory = Path(directory)
        if directory.is_file():
            directory = directory.parent
        for name in ("config.json", COUNTS_FILE):
            if not (directory / name).exists():
                raise ModelError(f"{directory}: not a Markov model folder (missing {name})")
        config_data = read_json(directory / "config.json", ModelError)
        data = read_json(directory / COUNTS_FILE, ModelError)
        if not isinstance(config_data, dict) or not isinstance(data, dict):
            raise ModelError(f"{directory}: not a Markov model (config.json and {COUNTS_FILE} must be JSON objects)")
        if config_data.get("arch") != ARCH or data.get("format") != FORMAT:
            raise ModelError(f"{directory}: not a Markov model (arch {config_data.get('arch')!r})")
        if data.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{directory}: Markov format_version {data.get('format_version')!r} not supported")
        try:
            model = cls(MarkovConfig.from_dict(config_data.get("config", {})))
            tables = data["tables"]
            if len(tables) != model.config.order + 1:
                raise ValueError(f"{len(tables)} tables for order {model.config.order}")
            for k, table in enumerate(tables):
                for context, followers in table:
                    if len(context) != k:
                        raise ValueError(f"context {context} in the order-{k} table")
                    counts = model.tables[k][tuple(int(p) for p in context)] = _Counts()
                    for p, s, d, v, n in followers:
                        token = (int(p), int(s), int(d), int(v))
                        if not all(0 <= x < size for x, size in zip(token, model.sizes)) or int(n) < 1:
                            raise ValueError(f"bad entry {[p, s, d, v, n]}")
                        counts.add(token, int(n))
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelError(f"{directory}: corrupt Markov model ({exc})") from exc
        return model
