"""Session memory: what it learns, what it forgets, its file, and its blend with the LSTM."""

import gzip
import json

import numpy as np
import pytest
import torch

from livegen.model.blend import CONFIDENCE_NEUTRAL, MemoryStream, blend_weight
from livegen.model.lstm import NoteLSTM, NoteLSTMConfig
from livegen.model.memory import MemoryConfig, MemoryFileError, SessionMemory
from livegen.model.params import SamplingParams
from livegen.model.stream import NoteStream
from livegen.model.tokens import TokenConfig
from tests.factories import tiny_model

MOTIF = [(60, 1.0), (62, 1.0), (64, 0.5), (65, 0.5), (67, 2.0), (64, 1.0)]  # (pitch, beats)


def motif_rows(transpose: int = 0, seconds_per_beat: float = 0.4, repeats: int = 1) -> np.ndarray:
    rows = [[p + transpose, b * seconds_per_beat, 0.9 * b * seconds_per_beat, 80] for _ in range(repeats) for p, b in MOTIF]
    return np.array(rows, dtype=np.float64)


def relative_model(seed: int = 0) -> NoteLSTM:
    torch.manual_seed(seed)
    config = NoteLSTMConfig(hidden=24, layers=1, pitch_embedding=8, field_embedding=8, dropout=0.0, head="linear",
                            input_projection=False, tokens=TokenConfig.relative_default())
    return NoteLSTM(config).eval()


def most_likely(memory: SessionMemory, cursor=None) -> tuple[int, int]:
    prediction = memory.predict(cursor)
    interval, rhythm = np.unravel_index(prediction.probs.argmax(), prediction.probs.shape)
    return int(interval) - memory.config.interval_limit, int(rhythm)


def test_a_motif_is_recognised_transposed_and_faster():
    memory = SessionMemory()
    memory.observe(motif_rows(repeats=4))
    played = memory.cursor.copy()
    other = SessionMemory()  # the same motif a fifth up and 1.6x faster gives the same prediction
    other.observe(motif_rows(transpose=7, seconds_per_beat=0.25, repeats=4))
    assert most_likely(memory) == most_likely(other)
    assert memory.predict().order == memory.config.order
    assert memory.predict().confidence > 0.6  # seen twice, always followed the same way: 2/3
    prediction = memory.predict(played)
    assert abs(prediction.probs.sum() - 1.0) < 1e-9 and (prediction.probs > 0).all()


def test_probabilities_sum_to_one_and_nothing_learned_is_uniform():
    memory = SessionMemory()
    prediction = memory.predict()
    assert prediction.confidence == 0.0 and prediction.order == 0
    np.testing.assert_allclose(prediction.probs, 1.0 / memory.config.symbols)


def test_bounded_forgetting_equals_a_memory_of_the_last_notes():
    config = MemoryConfig(capacity=40)
    rng = np.random.default_rng(0)
    rows = np.column_stack([rng.integers(55, 75, 300), rng.choice([0.0, 0.2, 0.4, 0.8], 300),
                            np.full(300, 0.3), np.full(300, 80)]).astype(float)
    bounded = SessionMemory(config)
    bounded.observe(rows)
    assert len(bounded) == 40
    fresh = SessionMemory(config)
    fresh._history = []
    for symbol in bounded._history:  # the same 40 symbols counted from scratch
        fresh._append(symbol)
    fresh.cursor = bounded.cursor
    np.testing.assert_allclose(bounded.predict().probs, fresh.predict().probs)
    assert sum(len(t) for t in bounded._tables) == sum(len(t) for t in fresh._tables)


def test_clear_forgets_everything():
    memory = SessionMemory()
    memory.observe(motif_rows(repeats=3))
    memory.clear()
    assert len(memory) == 0 and memory.notes_seen == 0
    np.testing.assert_allclose(memory.predict().probs, 1.0 / memory.config.symbols)


def test_the_file_round_trips_and_ends_its_session(tmp_path):
    memory = SessionMemory()
    memory.observe(motif_rows(repeats=3))
    path = memory.save(tmp_path / "me.mem")
    loaded = SessionMemory.load(path)
    assert len(loaded) == len(memory) and loaded.notes_seen == memory.notes_seen
    np.testing.assert_allclose(loaded.predict(memory.cursor).probs, memory.predict(memory.cursor).probs)
    # the next session starts fresh: no interval from the file's last note, no context across the break
    assert loaded.predict().order == 0
    loaded.observe(motif_rows()[:1])
    loaded.save(path)
    assert len(SessionMemory.load(path)) == len(memory)


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "me.mem"
    memory = SessionMemory()
    memory.observe(motif_rows(repeats=2))
    memory.save(path)
    before = path.read_bytes()

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", broken_fsync)
    memory.observe(motif_rows(transpose=3))
    with pytest.raises(MemoryFileError, match="cannot write"):
        memory.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["me.mem"]  # no temporary file left behind


@pytest.mark.parametrize("content, reason", [
    (b"", "truncated|not a livegen"),
    (b"MThd\x00\x00\x00\x06", "not a livegen"),
    (gzip.compress(b'{"format": "something-else"}'), "not a livegen memory file"),
    (gzip.compress(b'{"format": "livegen-memory", "version": 99}'), "version 99"),
    (gzip.compress(b'{"format": "livegen-memory", "version": 1, "config": {}, "history": [1, "x"]}'), "corrupt"),
    (gzip.compress(b'{"format": "livegen-memory", "version": 1, "config": {"order": 0}, "history": []}'), "corrupt"),
    (gzip.compress(b'[1, 2]'), "not a livegen memory file"),
])
def test_bad_files_are_refused(tmp_path, content, reason):
    path = tmp_path / "bad.mem"
    path.write_bytes(content)
    with pytest.raises(MemoryFileError, match=reason) as info:
        SessionMemory.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_every_truncation_is_refused(tmp_path):
    memory = SessionMemory()
    memory.observe(motif_rows(repeats=2))
    data = memory.save(tmp_path / "good.mem").read_bytes()
    for cut in range(0, len(data) - 1, max(1, len(data) // 40)):
        (tmp_path / "cut.mem").write_bytes(data[:cut])
        with pytest.raises(MemoryFileError):
            SessionMemory.load(tmp_path / "cut.mem")


# --- the blend ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_model", [tiny_model, relative_model], ids=["seconds", "relative"])
def test_weight_zero_is_the_lstm_exactly(make_model):
    model = make_model()
    plain = NoteStream(model, seed=3)
    blended = MemoryStream(NoteStream(model, seed=3), SessionMemory())
    for stream in (plain, blended):
        stream.feed(motif_rows(repeats=3))
    params = SamplingParams(temperature=1.0, memory=0.0)
    a, b = plain.fork(), blended.fork()
    for _ in range(40):
        row_a, row_b = a.sample(params), b.sample(params)
        np.testing.assert_array_equal(row_a, row_b)
        a.feed(row_a)
        b.feed(row_b)


@pytest.mark.parametrize("make_model", [tiny_model, relative_model], ids=["seconds", "relative"])
def test_weight_one_is_the_session_model(make_model):
    stream = MemoryStream(NoteStream(make_model(), seed=0), SessionMemory())
    stream.feed(motif_rows(repeats=4))
    params = SamplingParams(memory=1.0)
    session = stream.session()
    np.testing.assert_allclose(stream.step_probs(params, session), session.step)
    for step_bin in np.flatnonzero(session.step > 0):
        np.testing.assert_allclose(stream.pitch_probs(params, int(step_bin), session), session.pitch(int(step_bin)))
    # and the session model continues the motif: after 60 62 64 65 67 64 comes 60, a beat later
    rows = []
    answer = stream.fork()
    for _ in range(12):
        row = answer.sample(SamplingParams(temperature=0.0, memory=1.0))
        rows.append(row)
        answer.feed(row)
    assert [int(r[0]) for r in rows] == [p for p, _ in MOTIF] * 2


def test_blend_in_between_is_a_mixture():
    stream = MemoryStream(NoteStream(relative_model(), seed=0), SessionMemory())
    stream.feed(motif_rows(repeats=3))
    session = stream.session()
    lstm = stream.step_probs(SamplingParams(memory=0.0), session)
    mixed = stream.step_probs(SamplingParams(memory=0.5), session)
    w = blend_weight(0.5, session.prediction.confidence)
    np.testing.assert_allclose(mixed, (1 - w) * lstm + w * session.step)
    assert abs(mixed.sum() - 1) < 1e-5


def test_blend_weight_keeps_the_ends_and_rises_with_confidence():
    assert blend_weight(0.0, 1.0) == 0.0 and blend_weight(1.0, 0.0) == 1.0
    assert blend_weight(0.5, CONFIDENCE_NEUTRAL) == pytest.approx(0.5)
    assert blend_weight(0.5, 0.0) < blend_weight(0.5, 0.5) < blend_weight(0.5, 1.0)
    assert blend_weight(0.3, 0.9, adaptive=False) == 0.3


def test_answers_never_teach_the_memory():
    stream = MemoryStream(NoteStream(relative_model(), seed=0), SessionMemory())
    stream.feed(motif_rows(repeats=2))
    learned = (len(stream.memory), stream.memory.notes_seen, stream.memory.predict().probs.copy())
    answer = stream.fork()
    for _ in range(30):
        answer.feed(answer.sample(SamplingParams(memory=0.7)))
    assert (len(stream.memory), stream.memory.notes_seen) == learned[:2]
    np.testing.assert_array_equal(stream.memory.predict().probs, learned[2])
    assert answer.memory.predict(answer._cursor).order >= 0  # the answer's own cursor moved instead
    stream.feed(motif_rows()[:2])  # the player's notes still teach it
    assert stream.memory.notes_seen == learned[1] + 2


def test_sampling_respects_the_pitch_range_and_chords():
    stream = MemoryStream(NoteStream(relative_model(), seed=0), SessionMemory())
    stream.feed(motif_rows(repeats=3))
    params = SamplingParams(memory=1.0, pitch_low=70, pitch_high=80, temperature=1.5)
    answer = stream.fork()
    for _ in range(30):
        row = answer.sample(params, chord=[70, 71])
        assert 70 <= row[0] <= 80
        if row[1] == 0:
            assert row[0] not in (70, 71)
        answer.feed(row)


def test_harmonize_voices_a_memory_stream_with_the_model_and_teaches_the_memory_only_the_melody():
    """`livegen run` wraps the LSTM in a MemoryStream: harmonize must still voice with the model
    (its chord order and P(pitch | step)), and the memory must learn the player's melody alone."""
    from livegen.daemon import load_voicing
    from livegen.engine.harmonize import Melody, voice_chord
    from livegen.model.voicing import sample_pitch_at

    model = relative_model()
    stream = MemoryStream(NoteStream(model, seed=0), SessionMemory())
    voicing = load_voicing(stream)
    assert voicing.sample is sample_pitch_at
    assert voicing.chord_order == model.config.tokens.chord_order
    assert not stream.primed
    placed = []
    for count, pitch in enumerate((67, 69, 71, 72), start=1):
        melody = Melody(pitch, 0.0 if count == 1 else 0.5, 0.45, 80)
        placed += voice_chord(stream, voicing, melody, [-1, -2], SamplingParams(), 70, primed=stream.primed)
        assert stream.primed
        assert stream.memory.notes_seen == count
    assert placed, "no voice was placed"


def test_the_memory_leads_at_most_copy_limit_notes_in_a_row(monkeypatch):
    """The copy guard: past COPY_LIMIT scripted notes the LSTM alone plays until the answer
    leaves the memorised line, so the player's material comes back varied, not replayed whole."""
    from livegen.model import blend

    stream = MemoryStream(NoteStream(relative_model(), seed=0), SessionMemory())
    stream.feed(motif_rows(repeats=6))

    def runs(knob: float) -> list[int]:
        answer, seen = stream.fork(), []
        assert answer.copy_run == 0
        for _ in range(48):
            answer.feed(answer.sample(SamplingParams(memory=knob)))
            seen.append(answer.copy_run)
        return seen

    monkeypatch.setattr(blend, "COPY_LIMIT", 10**6)
    assert max(runs(0.95)) >= 24  # without the guard a confident memory replays the motif on and on
    monkeypatch.setattr(blend, "COPY_LIMIT", 4)
    guarded = runs(0.95)
    assert max(guarded) <= 5 and guarded.count(0) >= 6  # broken again and again, and the memory leads again
    assert max(guarded) >= 4
    assert max(runs(1.0)) >= 24  # W = 1 is the session alone, like mirror: no guard
