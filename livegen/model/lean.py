"""One streaming LSTM step at batch 1 on the CPU, in a handful of numpy calls.

Why: the daemon feeds one note at a time.  At batch 1 the arithmetic of a step is one small
matrix-vector product per layer (1536 x 384 for the shipped model, ~15 us through BLAS), but
torch spends ~0.14 ms dispatching the ~20 ops of embedding, concatenation and ``nn.LSTM``.  So
the weights are packed once here:

* layer 0's input contribution ``W_ih · [E_pitch[p], E_step[s], E_dur[d], E_vel[v]]`` is the sum
  of four rows of per-field tables ``E_field · W_ih_field^T`` (bias folded into one of them);
  with an input projection the tables give the projection's pre-activation instead;
* each layer's ``[W_ih | W_hh]`` is one matrix, applied to ``[x, h]`` in one product;
* the gate rows are reordered i, f, o, g and those of the three sigmoid gates halved, so one
  ``tanh`` over all gates gives tanh(x/2) for them (sigmoid(x) = (tanh(x/2) + 1) / 2, exact: the
  halving is a power of two) and tanh(x) for g: a few numpy calls per step instead of twenty.

``LeanStep(model)`` snapshots the weights: build a new one if the model is trained further.
It gives the same ``h`` and ``c`` as ``NoteLSTM.step`` to float32 rounding (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from livegen.model.lstm import NoteLSTM, State


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy()


def _gate_rows(hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, scale) of the gate rows: torch's i, f, g, o read as i, f, o, g, the sigmoid
    gates' rows halved (see the module doc)."""
    i, f, g, o = (np.arange(k * hidden, (k + 1) * hidden) for k in range(4))
    order = np.concatenate([i, f, o, g])
    scale = np.ones(4 * hidden, np.float32)
    scale[: 3 * hidden] = 0.5
    return order, scale


class LeanStep:
    """``NoteLSTM.step`` for one note and batch 1 on the CPU: tokens + state -> (h of the top
    layer as a (1, hidden) tensor, new state)."""

    def __init__(self, model: NoteLSTM) -> None:
        config = model.config
        self.hidden = hidden = config.hidden
        self.layers = config.layers
        lstm = model.lstm
        order, scale = _gate_rows(hidden)

        def gates(rows: np.ndarray) -> np.ndarray:
            """A matrix or vector whose leading axis is the 4 * hidden gate rows, reordered and scaled."""
            return np.ascontiguousarray(rows[order] * (scale if rows.ndim == 1 else scale[:, None]), dtype=np.float32)

        embeddings = (model.in_pitch, model.in_step, model.in_duration, model.in_velocity)
        widths = [e.embedding_dim for e in embeddings]
        first_bias = _numpy(lstm.bias_ih_l0 + lstm.bias_hh_l0)
        if config.input_projection:
            into, into_bias = _numpy(model.in_proj.weight), _numpy(model.in_proj.bias)
        else:
            into, into_bias = gates(_numpy(lstm.weight_ih_l0)), gates(first_bias)
        self.tables: list[np.ndarray] = []
        offset = 0
        for embedding, width in zip(embeddings, widths):
            table = _numpy(embedding.weight) @ into[:, offset : offset + width].T
            self.tables.append(np.ascontiguousarray(table, dtype=np.float32))
            offset += width
        self.tables[0] += into_bias  # every step adds exactly one pitch row
        self.projection = config.input_projection
        if self.projection:  # layer 0 then reads relu(projection) through its own W_ih
            self.first_input = gates(_numpy(lstm.weight_ih_l0))
            self.first_bias = gates(first_bias)
        self.first_recurrent = gates(_numpy(lstm.weight_hh_l0))
        self._prepared: tuple[State, np.ndarray] | None = None  # (state, W_hh · h) from prepare()
        self.stacked: list[tuple[np.ndarray, np.ndarray]] = []  # layers >= 1: ([W_ih | W_hh], bias)
        for layer in range(1, self.layers):
            weight = np.concatenate([_numpy(getattr(lstm, f"weight_ih_l{layer}")),
                                     _numpy(getattr(lstm, f"weight_hh_l{layer}"))], axis=1)
            bias = _numpy(getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}"))
            self.stacked.append((gates(weight), gates(bias)))

    def prepare(self, state: State | None) -> None:
        """Compute layer 0's recurrent term ``W_hh · h`` for ``state`` ahead of time (in idle time
        on the worker thread): the next ``__call__`` from this very state then skips the largest
        product of a one-layer step, since that term does not depend on the note to come."""
        if state is not None:
            self.prepare_numpy(state[0].detach().numpy().reshape(self.layers, self.hidden), key=state)

    def prepare_numpy(self, hs: np.ndarray, key: object = None) -> None:
        """``prepare`` for a numpy state (``hs``: (layers, hidden)); ``key`` is what ``step`` will be
        given as its state (the arrays themselves by default)."""
        self._prepared = (hs if key is None else key, self.first_recurrent @ hs[0])

    def _cell(self, gates: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gates in the packed order i, f, o, g, the first three halved (see the module doc)."""
        np.tanh(gates, out=gates)
        sigmoids = gates[: 3 * self.hidden]
        sigmoids *= 0.5
        sigmoids += 0.5
        i, f, o, g = gates.reshape(4, self.hidden)
        c_new = f * c
        g *= i
        c_new += g
        h_new = np.tanh(c_new)
        h_new *= o
        return h_new, c_new

    def step(self, tokens: tuple[int, int, int, int], hs: np.ndarray | None, cs: np.ndarray | None,
             key: object = None) -> tuple[np.ndarray, np.ndarray]:
        """One note on a numpy state (``hs``, ``cs``: (layers, hidden), or None for the zero state)
        -> the new (hs, cs), fresh arrays (the old ones are never written).  No torch call: on a
        cold CPU each torch call costs tens of microseconds, and harmonize waits for this step."""
        pitch, step, duration, velocity = tokens
        if hs is None:
            hs = np.zeros((self.layers, self.hidden), np.float32)
            cs = np.zeros((self.layers, self.hidden), np.float32)
        t = self.tables
        x = t[0][pitch] + t[1][step]
        x += t[2][duration]
        x += t[3][velocity]
        if self.projection:
            np.maximum(x, 0.0, out=x)
            gates = self.first_input @ x
            gates += self.first_bias
        else:
            gates = x
        prepared = self._prepared
        if prepared is not None and prepared[0] is (hs if key is None else key):
            gates += prepared[1]
        else:
            gates += self.first_recurrent @ hs[0]
        self._prepared = None
        new_h = np.empty_like(hs)
        new_c = np.empty_like(cs)
        new_h[0], new_c[0] = self._cell(gates, cs[0])
        for layer, (weight, bias) in enumerate(self.stacked, start=1):
            gates = weight @ np.concatenate([new_h[layer - 1], hs[layer]])
            gates += bias
            new_h[layer], new_c[layer] = self._cell(gates, cs[layer])
        return new_h, new_c

    def __call__(self, tokens: tuple[int, int, int, int], state: State | None) -> tuple[torch.Tensor, State]:
        """``step`` with torch tensors in and out, as ``NoteLSTM.step`` takes and gives them."""
        if state is None:
            new_h, new_c = self.step(tokens, None, None, key=None)
        else:
            hs = state[0].detach().numpy().reshape(self.layers, self.hidden)
            cs = state[1].detach().numpy().reshape(self.layers, self.hidden)
            new_h, new_c = self.step(tokens, hs, cs, key=state)
        h_out = torch.from_numpy(new_h)
        return h_out[-1:], (h_out.view(self.layers, 1, self.hidden), torch.from_numpy(new_c).view(self.layers, 1, self.hidden))
