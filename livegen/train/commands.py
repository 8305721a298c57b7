"""`livegen train` and `livegen eval`: argument definitions and the two commands.

The CLI registers ``add_train_arguments``/``run_train`` and ``add_eval_arguments``/``run_eval``;
``python -m livegen.train`` (what torchrun starts) calls the same train functions.  User errors
are LivegenError subclasses; the caller prints them as one line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from livegen.argtypes import add_prior_arguments, number, number_in_range
from livegen.errors import LivegenError, ModelError, OutputFileError, TrainingDataError

ARCH_CHOICES = {"note-lstm": "note-lstm", "lstm": "note-lstm", "seed": "seed-lstm", "seed-lstm": "seed-lstm",
                "markov": "markov"}
CARD_FILE = "MODEL_CARD.md"
AUGMENT_TRANSPOSE = 88  # AugmentConfig's default, repeated so parsing arguments needs no numpy


_positive_int = number(int, lambda value: value >= 1, "must be at least 1")
_non_negative_int = number(int, lambda value: value >= 0, "must be at least 0")
_fraction = number(float, lambda value: 0.0 <= value < 1.0, "must be in [0, 1)")
_positive_float = number(float, lambda value: value > 0, "must be positive")
_non_negative_float = number(float, lambda value: 0 <= value <= 10, "must be in [0, 10]")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data", action="append", default=[], metavar="PATH",
                       help="MIDI/score files, folders (searched recursively) or globs; repeatable")
    group.add_argument("--corpus", choices=["music21"], help="also use the corpus the music21 package ships")
    group.add_argument("--corpus-include", action="append", default=[], metavar="TEXT",
                       help="keep only corpus files whose path contains TEXT (e.g. bach/ or essenFolksong); repeatable")
    group.add_argument("--corpus-exclude", action="append", default=[], metavar="TEXT",
                       help="then drop corpus files whose path contains TEXT (e.g. joplin, to hold a style out); repeatable")
    group.add_argument("--workers", type=_non_negative_int, default=min(os.cpu_count() or 1, 8),
                       help="parser processes (default: CPU count up to 8; 0 = parse in this process)")
    group.add_argument("--cache", metavar="DIR", help="parsed-notes cache (default: the user cache dir)")
    group.add_argument("--no-cache", action="store_true", help="parse every file again, write no cache")
    group.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N, mps")
    group.add_argument("--threads", type=_positive_int, help="CPU threads for torch (default: torch's choice)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="model folder to write (model, config, split.json, log, checkpoints)")
    parser.add_argument("--arch", choices=sorted(ARCH_CHOICES), default="note-lstm",
                        help="note-lstm (ours, default), seed (the seed recipe baseline) or markov")
    _add_data_arguments(parser)
    split = parser.add_argument_group("split")
    split.add_argument("--val-fraction", type=_fraction, default=0.05, help="pieces held out for validation (default 0.05)")
    split.add_argument("--test-fraction", type=_fraction, default=0.05, help="pieces held out for testing (default 0.05)")
    split.add_argument("--split-from", type=Path, metavar="DIR",
                       help="reuse the split.json of another model folder (train baselines on the same split)")
    split.add_argument("--split-extend", action="store_true",
                       help="with --split-from: pieces of --data/--corpus that the split does not list join the "
                            "training side (copies of its validation or test pieces are left out), so a retrain on "
                            "more music is measured on the earlier release's validation and test pieces")
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=_positive_int, default=20, help="passes over the training pieces (default 20)")
    train.add_argument("--batch-size", type=_positive_int, help="windows per batch (default 64; seed 64)")
    train.add_argument("--window", type=_positive_int, default=128, help="notes per training window (note-lstm, default 128)")
    train.add_argument("--lr", type=_positive_float, help="peak learning rate (default 2e-3; seed 5e-3)")
    train.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.01; seed 0)")
    train.add_argument("--clip", type=float, help="max gradient norm, 0 = off (default 1.0; seed 0)")
    train.add_argument("--warmup", type=_non_negative_int, help="linear warm-up steps (default 100)")
    train.add_argument("--max-steps", type=_non_negative_int, default=0, help="stop after this many steps (0 = no limit)")
    train.add_argument("--no-augment", action="store_true", help="no transposition, tempo, jitter or velocity augmentation")
    train.add_argument("--transpose", type=_non_negative_int, default=AUGMENT_TRANSPOSE,
                       help=f"random transposition of training pieces by up to N semitones either way, never off the "
                            f"piano (default {AUGMENT_TRANSPOSE}: anywhere on the keyboard)")
    train.add_argument("--tempo-augment", type=_non_negative_float, default=1.0, metavar="A",
                       help="random tempo factor of training pieces in [1/(1+A), 1+A] (default 1: x0.5 to x2)")
    train.add_argument("--init-from", type=Path, metavar="DIR",
                       help="start from this trained model (fine-tuning: e.g. models/default on your own MIDI "
                            "files); its architecture and time representation are kept")
    train.add_argument("--seed", type=int, default=0, help="seed of the split, initialisation and batches (default 0)")
    train.add_argument("--select", choices=["pitch", "total"], default="pitch",
                       help="validation loss that picks the saved model: pitch (the headline, default) or the "
                            "sum over all fields (noisier: a score's velocity level is a guess)")
    train.add_argument("--ema", type=_fraction, default=0.0, metavar="DECAY",
                       help="validate and save a moving average of the weights, each step weighing 1-DECAY "
                            "(e.g. 0.999: about the last 1,000 steps; default 0: the weights themselves)")
    train.add_argument("--resume", action="store_true", help="continue from DIR/last (same data and split)")
    train.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                       help="mixed precision on CUDA (auto: bf16 where supported, else fp16; CPU: off)")
    train.add_argument("--export-dtype", choices=["float32", "float16"], default="float32",
                       help="dtype of the best model's weights on disk (float16 halves the file)")
    model = parser.add_argument_group("model size")
    model.add_argument("--hidden", type=_positive_int, help="LSTM width (default 384; seed 128)")
    model.add_argument("--layers", type=_positive_int, default=1, help="LSTM layers (note-lstm, default 1)")
    model.add_argument("--dropout", type=float, default=0.1, help="dropout on the LSTM output (note-lstm, default 0.1)")
    model.add_argument("--head", choices=["linear", "mlp"], default="linear",
                       help="output heads (note-lstm): one Linear per field (default) or Linear-GELU-Linear")
    model.add_argument("--input-projection", action=argparse.BooleanOptionalAction, default=False,
                       help="a Linear+ReLU between the note embedding and the LSTM (note-lstm, default off)")
    model.add_argument("--interval-range", type=_interval_range, metavar="R",
                       help="note-lstm: an interval head over -R..R semitones from the pitch just read, added to the "
                            "pitch head (default 36 for a new model; 0 = none). With --init-from a model without one, "
                            "a zeroed head is added: the same function to start from")
    model.add_argument("--markov-order", type=_positive_int, default=4, help="longest context (markov, default 4)")
    model.add_argument("--time", choices=["relative", "seconds"], default="relative",
                       help="note-lstm timing: relative (steps and durations in units of the running tempo, so "
                            "answers follow the player's tempo; default) or seconds (the first release's)")
    model.add_argument("--chord-order", choices=["descending", "ascending"], default="descending",
                       help="order of the notes of a chord (note-lstm): descending (top note first, so the model "
                            "learns the voices under a melody; default) or ascending")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="model folders, or the word markov (fitted on the training split of the first model "
                             "folder that has a split.json, or on --markov-data)")
    _add_data_arguments(parser)
    parser.add_argument("--split", choices=["test", "validation", "train"], default="test",
                        help="without --data/--corpus: evaluate these pieces of the recorded split (default test)")
    parser.add_argument("--split-from", type=Path, metavar="DIR",
                        help="model folder whose split.json to use (default: the first model given that has one)")
    parser.add_argument("--markov-data", action="append", default=[], metavar="PATH",
                        help="files/folders/globs to fit the markov baseline on instead of the recorded training split")
    parser.add_argument("--markov-order", type=_positive_int, default=4, help="longest Markov context (default 4)")
    parser.add_argument("--primer-notes", type=_positive_int, default=32, help="notes that prime each continuation (default 32)")
    parser.add_argument("--continuation-notes", type=_positive_int, default=128,
                        help="longest continuation per piece, as long as the real one (default 128)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for continuations (default 1)")
    add_prior_arguments(parser, about="note-lstm continuations, as livegen run samples them: ")
    parser.add_argument("--max-pieces", type=_non_negative_int, default=0, help="evaluate at most N pieces (0 = all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the continuations (default 0)")
    parser.add_argument("--follow-pieces", type=_non_negative_int, default=150, metavar="N",
                        help="how well answers follow the player (tempo, register, key, dynamics, chords) on calls "
                             "from at most N pieces (default 150; 0 = skip the follow section)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--session-memory", type=number_in_range(float, 0.0, 1.0), metavar="W",
                        help="also score each piece as one session with the session memory at weight W "
                             "(pitch NLL with and without, motif reuse; see livegen.train.session_eval)")
    parser.add_argument("--output", type=Path, metavar="FILE", help="also write the JSON report to FILE")
    parser.add_argument("--harmonize", action="store_true",
                        help="also voice the held-out Bach chorales' sopranos as harmonize mode does: "
                             "models[MODEL][\"harmonize\"] against Bach's lower voices and a diatonic-thirds baseline")


# --- shared helpers ------------------------------------------------------------------------------


def _setup(args) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)


def _cache(args) -> Path | None:
    from livegen.train.data import default_cache_dir

    if args.no_cache:
        return None
    return Path(args.cache).expanduser() if args.cache else default_cache_dir()


def _source_files(args, patterns=None) -> list[str]:
    from livegen.train.data import corpus_files, find_files

    patterns = args.data if patterns is None else patterns
    files = find_files(patterns) if patterns else []
    if getattr(args, "corpus", None) == "music21":
        files += corpus_files(args.corpus_include, args.corpus_exclude)
    return list(dict.fromkeys(files))


def _ingest(files, args, dist_info=None, log=print):
    """Parse files; under DDP rank 0 parses (filling the cache) while the others wait."""
    from livegen.train.data import ingest
    from livegen.train.loop import barrier

    cache = _cache(args)
    if dist_info is not None and dist_info.enabled:
        if not dist_info.main:
            barrier(dist_info)
        result = ingest(files, cache, args.workers if dist_info.main else 0, progress=not args.quiet and dist_info.main)
        if dist_info.main:
            barrier(dist_info)
    else:
        result = ingest(files, cache, args.workers, progress=not args.quiet)
    if dist_info is None or dist_info.main:
        log(result.summary())
    return result


def _command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        argv[0] = "python -m livegen.train"
    elif argv:
        argv[0] = Path(argv[0]).name
    return " ".join(shlex.quote(a) for a in argv)


def _hardware(device) -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    text = f"{cpu}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        text = f"{torch.cuda.get_device_name(device)} ({text})"
    return text


# --- train ---------------------------------------------------------------------------------------


def _model_for(args, arch: str):
    from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
    from livegen.model.seed_baseline import SeedLSTM, SeedLSTMConfig
    from livegen.model.tokens import TokenConfig

    try:
        if arch == "seed-lstm":
            return SeedLSTM(SeedLSTMConfig(hidden=args.hidden or 128))
        tokens = TokenConfig.relative_default(args.chord_order) if args.time == "relative" \
            else TokenConfig(chord_order=args.chord_order)
        return NoteLSTM(NoteLSTMConfig(hidden=args.hidden or 384, layers=args.layers, dropout=args.dropout,
                                       head=args.head, input_projection=args.input_projection, tokens=tokens,
                                       interval_range=DEFAULT_INTERVAL_RANGE if args.interval_range is None
                                       else args.interval_range))
    except ValueError as exc:
        raise ModelError(f"invalid model size: {exc}") from exc


DEFAULT_INTERVAL_RANGE = 36
"""Semitones each way the interval head of a new note-lstm reaches (three octaves: nearly every
move between two notes of the corpus, chords' drops to the bass included)."""


def _interval_range(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 127:
        raise argparse.ArgumentTypeError(f"must be 0..127, got {value}")
    return value


def _grow_interval_head(model, reach: int | None, flag: str, source: Path):
    """The loaded model, with a zeroed interval head added when ``--interval-range`` asks for one
    it lacks; a model whose head reaches elsewhere cannot be changed (ModelError)."""
    have = getattr(getattr(model, "config", None), "interval_range", None)
    if reach is None or have is None or reach == have:
        return model
    if have:
        raise ModelError(f"{flag}: {source} has an interval head of reach {have}; --interval-range {reach} cannot change it")
    from livegen.model.lstm import with_interval_head

    return with_interval_head(model, reach)


def _train_config(args, arch: str):
    from livegen.train.augment import NO_AUGMENTATION, AugmentConfig
    from livegen.train.loop import SeedTask, TrainConfig

    values = {"arch": arch, "epochs": args.epochs, "window": args.window, "seed": args.seed,
              "max_steps": args.max_steps, "amp": args.amp, "select": args.select, "ema": args.ema,
              "augment": NO_AUGMENTATION if args.no_augment else AugmentConfig(transpose=args.transpose,
                                                                               tempo=args.tempo_augment)}
    if arch == "seed-lstm":
        values.update(SeedTask.defaults)
    for name in ("batch_size", "lr", "weight_decay", "clip", "warmup"):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    return TrainConfig(**values)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from livegen.model.device import resolve_device
    from livegen.train.data import content_key, extend_split, read_split, select, split_pieces, write_split
    from livegen.train.loop import init_distributed, shutdown_distributed

    _setup(args)
    arch = ARCH_CHOICES[args.arch]
    out = Path(args.out).expanduser()
    device = resolve_device(args.device)
    dist_info, device = init_distributed(device) if arch != "markov" else (None, device)
    main = dist_info is None or dist_info.main

    def log(text: str) -> None:
        if main:
            print(text, flush=True)

    try:
        if args.resume and not (out / "last" / "config.json").is_file():
            raise ModelError(f"--resume: {out / 'last'} holds no checkpoint to resume from")
        if args.split_extend and args.split_from is None:
            raise TrainingDataError("--split-extend needs --split-from DIR (the split to extend)")
        split_source = out if args.resume else args.split_from
        recorded = read_split(split_source) if split_source is not None else None
        files = _source_files(args)
        if not files and recorded is not None:
            from livegen.train.data import file_of

            files = list(dict.fromkeys(file_of(p) for k in ("train", "validation", "test") for p in recorded[k]))
        if not files:
            raise TrainingDataError("no training data: give --data PATH and/or --corpus music21")
        if main:
            if out.exists() and not out.is_dir():
                raise OutputFileError(out, "is not a folder")
            try:
                out.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OutputFileError(out, f"cannot create the folder ({exc.strerror or exc})") from exc
        ingested = _ingest(files, args, dist_info, log)
        if not ingested.pieces:
            raise ingested.nothing_usable()
        extra = {}
        if recorded is not None:
            split = {k: recorded[k] for k in ("train", "validation", "test")}
            if args.split_extend:
                split, leaked = extend_split({**split, "held_out_styles": recorded.get("held_out_styles", [])},
                                             ingested.pieces)
                log(f"--split-extend: {len(split['train']) - len(recorded['train'])} pieces added to training, "
                    f"{len(leaked)} left out as copies of validation or test pieces")
                extra = {"extended_from": str(args.split_from), "left_out_as_copies": leaked}
            extra.update({k: recorded[k] for k in ("held_out_styles",) if k in recorded})
        else:
            keys = {p.id: content_key(p.notes) for p in ingested.pieces}  # duplicates stay on one side
            split = split_pieces([p.id for p in ingested.pieces], args.seed, args.val_fraction, args.test_fraction, keys)
        train_pieces = select(ingested.pieces, split["train"])
        val_pieces = select(ingested.pieces, split["validation"])
        if not train_pieces:
            raise TrainingDataError("the split leaves no training pieces")
        if main and not args.resume:
            write_split(out, split, seed=args.seed, sources={"data": args.data, "corpus": args.corpus,
                                                             "corpus_include": args.corpus_include,
                                                             "corpus_exclude": args.corpus_exclude},
                        split_from=str(args.split_from) if args.split_from else None, **extra)
        log(f"split: {len(train_pieces)} train, {len(val_pieces)} validation, {len(split['test'])} test pieces "
            f"({sum(len(p.notes) for p in train_pieces)} training notes)")
        meta = {"command": _command_line(), "data": {"files": ingested.files, "pieces": len(ingested.pieces),
                                                     "skipped": len(ingested.skipped), "train_pieces": len(train_pieces),
                                                     "train_notes": int(sum(len(p.notes) for p in train_pieces))},
                "split": "split.json", "device": str(device), "hardware": _hardware(device),
                "init_from": str(args.init_from) if args.init_from else None}
        if arch == "markov":
            return _train_markov(args, out, train_pieces, val_pieces, meta, log)
        return _train_network(args, arch, out, device, dist_info, train_pieces, val_pieces, meta, log)
    finally:
        if dist_info is not None:
            shutdown_distributed(dist_info)


def _train_network(args, arch, out, device, dist_info, train_pieces, val_pieces, meta, log) -> int:
    import copy

    import torch

    from livegen.model.checkpoint import load_model, save_model
    from livegen.train.loop import LAST_DIR, train

    config = _train_config(args, arch)
    torch.manual_seed(args.seed)
    model = _model_for(args, arch)
    for flag, source in (("--resume", out / LAST_DIR if args.resume else None), ("--init-from", args.init_from)):
        if source is None:
            continue
        expected = type(model)
        model = load_model(source, device="cpu").float().train()
        if type(model) is not expected:
            raise ModelError(f"{flag}: {source} holds a different architecture than --arch {args.arch}")
        model = _grow_interval_head(model, args.interval_range, flag, source)
        break
    parameters = sum(p.numel() for p in model.parameters())
    log(f"model: {arch}, {parameters:,} parameters, device {device}"
        + (f", {dist_info.world} processes" if dist_info.enabled else ""))
    started = time.time()

    def save(m, directory: Path, summary: dict) -> None:
        extra = {"training": {**meta, "train_config": config.to_dict(), **summary,
                              "processes": dist_info.world, "wall_seconds": round(time.time() - started, 1)}}
        if directory != out / LAST_DIR and args.export_dtype == "float16":
            m = copy.deepcopy(m).half()
        save_model(m, directory, extra=extra)

    result = train(model, config, train_pieces, val_pieces, out, device, dist_info, resume=args.resume,
                   save=save, progress=not args.quiet, log=log)
    if dist_info.main:
        log(f"done: {result.epochs_done} epochs, {result.steps} steps, best epoch {result.best_epoch} "
            f"(val {result.best_val:.4f}), {result.train_seconds:.0f} s training, "
            f"{result.notes_per_second:.0f} notes with loss per second")
        _write_card(out, arch, meta, config, result, parameters)
        log(f"wrote {out}")
    return 0


def _train_markov(args, out, train_pieces, val_pieces, meta, log) -> int:
    from livegen.model.markov import MarkovConfig, MarkovModel
    from livegen.train.evaluate import MarkovPredictor, likelihoods

    started = time.perf_counter()
    model = MarkovModel(MarkovConfig(order=args.markov_order)).fit(p.notes for p in train_pieces)
    seconds = time.perf_counter() - started
    val = likelihoods(MarkovPredictor(model), val_pieces) if val_pieces else {}
    model.save(out, extra={"training": {**meta, "fit_seconds": round(seconds, 2), "validation": val}})
    log(f"markov order {args.markov_order}: {model.notes_seen} notes observed in {seconds:.1f} s"
        + (f"; validation pitch NLL {val['pitch_nll']:.3f}" if val.get("pitch_nll") is not None else ""))
    log(f"wrote {out}")
    return 0


def _write_card(out: Path, arch: str, meta: dict, config, result, parameters: int) -> None:
    """A starting MODEL_CARD.md (kept if one exists: cards are edited by hand with eval results)."""
    path = out / CARD_FILE
    if path.exists():
        return
    last = result.history[-1] if result.history else {}
    text = f"""# {out.name}

Architecture `{arch}`, {parameters:,} parameters.  Written by `livegen train`; add evaluation
results with `livegen eval {out} --json`.

## Data
{meta['data']['files']} files -> {meta['data']['pieces']} pieces ({meta['data']['skipped']} files skipped);
training on {meta['data']['train_pieces']} pieces, {meta['data']['train_notes']} notes.  The split by
piece is in `split.json`.

## Command
```
{meta['command']}
```

## Training
{result.epochs_done} epochs, {result.steps} steps, {result.train_seconds:.0f} s of training on {meta['hardware']}
(device {meta['device']}), {result.notes_per_second:.0f} notes with a loss per second.
Best epoch {result.best_epoch}, validation loss {result.best_val:.4f}; last epoch: {json.dumps(last.get('val') or last.get('train'))}.

Settings: {json.dumps(config.to_dict())}
"""
    path.write_text(text)


# --- eval ----------------------------------------------------------------------------------------


def write_text_output(path: Path, text: str) -> None:
    """Write a report; OutputFileError naming the file when it cannot be written."""
    from livegen.notes import prepare_output

    path = prepare_output(path)
    try:
        path.write_text(text)
    except OSError as exc:
        raise OutputFileError(path, f"cannot write ({exc.strerror or exc})") from exc


def run_eval(args: argparse.Namespace) -> int:
    from livegen import __version__
    from livegen.model.device import resolve_device
    from livegen.model.markov import MarkovConfig, MarkovModel
    from livegen.train.data import file_of, read_split, select
    from livegen.train.evaluate import EvalSettings, evaluate, format_table, load_predictor

    _setup(args)
    device = resolve_device(args.device)
    log = (lambda text: print(text, file=sys.stderr, flush=True)) if args.json else (lambda text: print(text, flush=True))
    specs = list(dict.fromkeys(args.models))
    folders = [Path(s) for s in specs if s != "markov"]
    for folder in folders:
        if not folder.exists():
            raise ModelError(f"{folder}: no such model folder")

    split_dir = args.split_from or next((f for f in folders if (f / "split.json").is_file()), None)
    recorded = read_split(split_dir) if split_dir is not None else None

    files = _source_files(args)
    source = {"data": args.data, "corpus": args.corpus, "corpus_include": args.corpus_include,
              "corpus_exclude": args.corpus_exclude}
    wanted = None
    if not files:
        if recorded is None:
            raise TrainingDataError("nothing to evaluate on: give --data PATH or --corpus music21, or a model "
                                    "folder with a split.json (its test pieces are used)")
        wanted = recorded[args.split]
        files = list(dict.fromkeys(file_of(p) for p in wanted))
        source = {"split": args.split, "split_from": str(split_dir)}
    ingested = _ingest(files, args, log=log)
    pieces = ingested.pieces if wanted is None else select(ingested.pieces, wanted)
    if not pieces:
        raise ingested.nothing_usable("evaluation files")

    markov = None
    markov_info = None
    if "markov" in specs:
        if args.markov_data:
            train_files = _source_files(argparse.Namespace(**{**vars(args), "corpus": None}), args.markov_data)
            fit_on = _ingest(train_files, args, log=log).pieces
            markov_info = {"fitted_on": args.markov_data}
        elif recorded is not None:
            train_ids = recorded["train"]
            fit_on = select(_ingest(list(dict.fromkeys(file_of(p) for p in train_ids)), args, log=log).pieces, train_ids)
            markov_info = {"fitted_on": f"train split of {split_dir}"}
        else:
            raise TrainingDataError("`markov` needs training data: --markov-data PATH, or a model folder with a split.json")
        if not fit_on:
            raise TrainingDataError("no usable pieces to fit the markov baseline on")
        log(f"fitting markov (order {args.markov_order}) on {len(fit_on)} pieces ...")
        markov = MarkovModel(MarkovConfig(order=args.markov_order)).fit(p.notes for p in fit_on)
        markov_info["notes"] = markov.notes_seen

    predictors = {spec: load_predictor(spec, device, markov if spec == "markov" else None, args.key_prior,
                                        args.register_prior, args.rhythm_temperature) for spec in specs}
    from livegen.train.follow import FollowSettings

    follow_settings = FollowSettings(max_pieces=args.follow_pieces, temperature=args.temperature, seed=args.seed) \
        if args.follow_pieces else None
    settings = EvalSettings(primer_notes=args.primer_notes, continuation_notes=args.continuation_notes,
                            temperature=args.temperature, seed=args.seed, max_pieces=args.max_pieces,
                            follow=follow_settings)
    started = time.perf_counter()
    result = evaluate(predictors, pieces, settings, progress=None if args.quiet else log)
    if args.harmonize:
        _add_harmonize(result, predictors, pieces, args, log)
    report = {
        "livegen_version": __version__,
        "headline": "pitch_nll: nats per note of -log P(pitch | context), notes 26.. of each piece; for note-lstm "
                    "the marginal over its step prediction (pitch_nll_given_step conditions on the true step). "
                    "continuation.features: Yang & Lerch overlapped area (1 best) and KL (0 best) per feature.",
        "data": {**source, "files": ingested.files, "pieces": len(pieces), "notes": int(sum(len(p.notes) for p in pieces)),
                 "skipped_count": len(ingested.skipped),
                 "skipped": [{"file": f, "reason": r} for f, r in ingested.skipped]},
        "settings": {"primer_notes": settings.primer_notes, "continuation_notes": settings.continuation_notes,
                     "temperature": settings.temperature, "key_prior": args.key_prior,
                     "register_prior": args.register_prior, "rhythm_temperature": args.rhythm_temperature,
                     "pitch_range": list(settings.pitch_range),
                     "seed": settings.seed, "max_pieces": settings.max_pieces, "scored_from_note": 26},
        "markov": markov_info,
        **result,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if args.session_memory is not None:
        from livegen.train.session_eval import SessionSettings, session_memory_report

        memory_settings = SessionSettings(weight=args.session_memory, temperature=args.temperature, seed=args.seed)
        for spec, predictor in predictors.items():
            log(f"session memory {args.session_memory:g}: {spec} ...")
            report["models"][spec]["session_memory"] = session_memory_report(predictor, pieces[: settings.max_pieces or None], memory_settings)
    text = json.dumps(report, indent=2)
    if args.output:
        write_text_output(args.output, text + "\n")
    if args.json:
        print(text)
    else:
        print(format_table(report))
        if args.harmonize:
            from livegen.train.harmony import format_harmonize

            print(format_harmonize(report["models"]))
        print(f"{report['pieces']} pieces, {report['data']['skipped_count']} files skipped")
    return 0


def _add_harmonize(result: dict, predictors: dict, pieces, args, log) -> None:
    """``models[MODEL]["harmonize"]`` for every note LSTM (livegen/train/harmony.py)."""
    from livegen.model.lstm import NoteLSTM
    from livegen.model.stream import NoteStream
    from livegen.train.harmony import voicing_for
    from livegen.train.harmony import evaluate_harmonize

    for spec, predictor in predictors.items():
        model = getattr(predictor, "model", None)
        if not isinstance(model, NoteLSTM):
            continue
        log(f"harmonize: {spec} voices the held-out chorales' sopranos ...")
        make = lambda: NoteStream(model, seed=args.seed)  # noqa: E731 - one fresh, seeded stream per piece
        result["models"][spec]["harmonize"] = evaluate_harmonize(make, voicing_for(make()), pieces)


def main(argv=None) -> int:
    """`python -m livegen.train ...` (what torchrun starts): the train command alone."""
    parser = argparse.ArgumentParser(prog="python -m livegen.train", description="train a livegen model")
    add_train_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_train(args)
    except LivegenError as exc:
        print(f"livegen train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
