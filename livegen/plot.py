"""Piano rolls and note distributions as PNG files.

Drawn on a bare matplotlib Figure with the Agg canvas, never pyplot: no display is needed, no
global figure state is touched, and the GUI backend a user configured is left alone.
Matplotlib is imported inside the functions because it is slow to import and only `plot` needs it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from livegen.errors import OutputFileError
from livegen.notes import DURATION, PITCH, STEP, VELOCITY, Track, notes_to_array, prepare_output, read_tracks

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
DROP_PERCENTILE = 2.5  # step/duration histograms drop the longest 2.5 %, as the TF tutorial does
MAX_PITCH_TICKS = 16
HIST_BINS = 20


def note_name(pitch: int) -> str:
    """Scientific pitch name, MIDI 60 = C4 (pretty_midi's convention)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def pitch_ticks(low: int, high: int) -> list[int]:
    """At most MAX_PITCH_TICKS ticks on a spacing anchored at C, so every C is labelled once it thins out."""
    for spacing in (1, 2, 3, 4, 6, 12, 24):
        ticks = [p for p in range(low, high + 1) if p % spacing == 0]
        if len(ticks) <= MAX_PITCH_TICKS:
            return ticks
    return list(range(0, 128, 24))


def plot_piano_roll(
    tracks: Sequence[Track],
    out_png: str | os.PathLike,
    title: str | None = None,
    distributions: bool = False,
) -> Path:
    """Write a piano roll of ``tracks`` (one colour per track, opacity by velocity) to a PNG.

    With ``distributions`` a second row shows histograms of pitch, step, duration and velocity.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = prepare_output(out_png)
    fig = Figure(figsize=(12, 8 if distributions else 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    colours = _track_colours(len(tracks))
    if distributions:
        grid = fig.add_gridspec(2, 4, height_ratios=(1.6, 1))
        roll = fig.add_subplot(grid[0, :])
        hist_axes = [fig.add_subplot(grid[1, i]) for i in range(4)]
        _draw_distributions(hist_axes, tracks, colours)
    else:
        roll = fig.add_subplot()
    _draw_roll(roll, tracks, colours)
    if title:
        fig.suptitle(title)
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as exc:
        raise OutputFileError(path, f"cannot write PNG ({exc.strerror or exc})") from exc
    return path


def plot_midi_file(in_path: str | os.PathLike, out_png: str | os.PathLike, distributions: bool = False) -> Path:
    """Plot a MIDI file with one colour per instrument; MidiFileError names an unreadable file."""
    tracks = read_tracks(in_path)
    return plot_piano_roll(tracks, out_png, title=Path(in_path).name, distributions=distributions)


def _track_colours(n: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if n <= 10 else colormaps["tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _draw_roll(ax, tracks: Sequence[Track], colours: Sequence[tuple]) -> None:
    from matplotlib.colors import to_rgba
    from matplotlib.patches import Patch

    handles = []
    all_pitches: list[int] = []
    end = 0.0
    names = [t.name or "track" for t in tracks]
    for index, (track, colour) in enumerate(zip(tracks, colours)):
        if not track.notes:
            continue
        starts = np.array([n.start for n in track.notes], dtype=float)
        widths = np.array([max(n.end - n.start, 0.0) for n in track.notes], dtype=float)
        pitches = np.array([n.pitch for n in track.notes])
        faces = [to_rgba(colour, 0.25 + 0.75 * min(max(n.velocity, 0), 127) / 127) for n in track.notes]
        ax.barh(pitches, widths, left=starts, height=0.8, color=faces, edgecolor=colour, linewidth=0.4)
        label = names[index] if names.count(names[index]) == 1 else f"{names[index]} #{index + 1}"
        handles.append(Patch(color=colour, label=f"{label} (drums)" if track.is_drum else label))
        all_pitches += pitches.tolist()
        end = max(end, float((starts + widths).max()))
    if all_pitches:
        low, high = min(all_pitches), max(all_pitches)
        ax.set_ylim(low - 1, high + 1)
        ticks = pitch_ticks(low, high)
        ax.set_yticks(ticks, [note_name(p) for p in ticks])
        ax.legend(handles=handles, loc="upper right", fontsize="small")
    else:
        ax.text(0.5, 0.5, "no notes", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlim(0, end * 1.01 if end > 0 else 1.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("pitch")
    ax.grid(axis="x", alpha=0.3)


def _draw_distributions(axes, tracks: Sequence[Track], colours: Sequence[tuple]) -> None:
    """Stacked histograms per track; a track's first step is left out (it has no predecessor)."""
    arrays = [notes_to_array(t.notes) for t in tracks]
    columns = {
        "pitch": [a[:, PITCH] for a in arrays],
        "step (s)": [a[1:, STEP] for a in arrays],
        "duration (s)": [a[:, DURATION] for a in arrays],
        "velocity": [a[:, VELOCITY] for a in arrays],
    }
    for ax, (label, values) in zip(axes, columns.items()):
        everything = np.concatenate(values) if values else np.zeros(0)
        if everything.size:
            ax.hist(values, bins=_bins(label, everything), stacked=True, color=list(colours))
        ax.set_xlabel(label)
    axes[0].set_ylabel("notes")


def _bins(label: str, values: np.ndarray) -> np.ndarray:
    if label == "pitch":
        low, high = int(values.min()), int(values.max())
        return np.arange(low, high + 2) - 0.5 if high - low < 48 else np.linspace(low, high + 1, HIST_BINS + 1)
    if label == "velocity":
        return np.linspace(0, 128, HIST_BINS + 1)
    top = float(np.percentile(values, 100 - DROP_PERCENTILE))
    return np.linspace(0.0, top if top > 0 else 1e-3, HIST_BINS + 1)
