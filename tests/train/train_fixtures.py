"""Small data sets and argument helpers shared by the training tests."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import music21
import pretty_midi

from livegen.notes import Note, Track, write_midi
from livegen.train.commands import add_eval_arguments, add_train_arguments

MUSIC21 = Path(music21.__file__).parent
MUSIC21_MIDI = MUSIC21 / "midi" / "testPrimitive" / "test01.mid"
CHORALE = MUSIC21 / "corpus" / "bach" / "bwv66.6.mxl"
KERN = MUSIC21 / "corpus" / "palestrina" / "Agnus_01.krn"

TINY = ["--hidden", "16", "--layers", "1", "--window", "32", "--batch-size", "8", "--workers", "0",
        "--threads", "1", "--quiet", "--warmup", "2"]


def song(index: int, length: int = 48) -> list[Note]:
    """A patterned tune: a scale figure over a key, with chords and two rhythms."""
    base = 48 + (index * 5) % 24
    shape = [0, 4, 7, 12, 7, 4, 2, 5]
    shape = shape[index % 8 :] + shape[: index % 8]  # every index a different tune, not a transposed copy
    shape[-1] += index // 8
    notes, t = [], 0.0
    for i in range(length):
        step = 0.25 if (i // 8) % 2 == 0 else 0.5
        pitch = base + shape[i % len(shape)]
        notes.append(Note(pitch, t, t + step * 0.9, 60 + (i % 4) * 10))
        if i % 8 == 0:
            notes.append(Note(pitch - 12, t, t + step * 1.8, 50))  # a bass note: a two-note chord
        t += step
    return notes


def write_songs(folder: Path, count: int = 12, corrupt: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        write_midi(folder / f"song{i:02d}.mid", [Track("melody", song(i))])
    if corrupt:
        (folder / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
        empty = pretty_midi.PrettyMIDI()
        empty.instruments.append(pretty_midi.Instrument(0))
        empty.write(str(folder / "empty.mid"))
    return folder


def real_files(folder: Path) -> Path:
    """Files the music21 package ships (MIDI, MusicXML, kern) plus a corrupt one."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in (MUSIC21_MIDI, CHORALE, KERN):
        shutil.copy(source, folder / source.name)
    (folder / "broken.mxl").write_bytes(b"PK\x03\x04 not really a zip")
    return folder


def train_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def eval_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_eval_arguments(parser)
    return parser.parse_args([str(a) for a in argv])
