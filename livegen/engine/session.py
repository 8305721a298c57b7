"""A playing session: the engine thread that turns incoming MIDI into answers.

    input.get() -> NoteAssembler -> Window -> worker.feed      (the model keeps up while you play)
                              \\-> PhraseDetector -> answer    (speculative, timed at the gap's end)
                              \\-> passthrough sinks           (hear yourself through the synth)

Speculation: as soon as everything is released, the gap's end is known.  The worker samples the
answer right away and the scheduler holds it with its first note due exactly at that instant.  If
the player plays on, the answer is cancelled before a note of it sounds; if not, it starts on
time, so the latency is the scheduler's wake-up jitter, not the model's inference time.

Barge-in: a key pressed while the answer plays cancels it at once (note-offs sent), unless the
mode is "overlap".  Mode "harmonize" answers no phrase: each key pressed gets voices at once
(livegen/engine/harmonize.py); switching into or out of it leaves nothing sounding.  Every thread is started by ``start()`` and joined by ``stop()``, which leaves
nothing sounding.
"""

from __future__ import annotations

import dataclasses
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence

from livegen import midi_bytes as mb
from livegen.engine.assembler import (
    ClockContinue,
    ClockStart,
    ClockStop,
    ClockTick,
    ControlChanged,
    Event,
    NoteAssembler,
    NoteCompleted,
    NoteStarted,
    ProgramChanged,
)
from livegen.clock import Clock
from livegen.engine.control import STATE_VALUES, ControlMap, TimedScheduler
from livegen.engine.harmonize import Harmonizer, HarmonizeSettings, ModelVoicing, check_placement
from livegen.engine.phrase import PhraseDetector, PhraseEnd
from livegen.engine.scheduler import Scheduler, SchedulerThread
from livegen.engine.tempo import DIVISIONS, ClockFollower, Grid, phrase_beat
from livegen.engine.window import Window
from livegen.engine.worker import Predictor, ResponseRequest, ResponseWorker
from livegen.io.sinks import RecordingSink, Sink
from livegen.model.memory import SessionMemory
from livegen.model.params import SamplingParams, live_params

MODES = ("call-response", "overlap", "mirror", "harmonize")
HARMONIZE = "harmonize"
POLL_INTERVAL = 0.05  # seconds: the longest the engine thread sleeps without checking for stop
COMMAND_POLL_S = 0.005  # ... and for commands, once enable_commands() was called (a panic must be quick)


class MessageSource(Protocol):
    """Where played MIDI comes from: a port's queue, or the demo's in-process player."""

    def get(self, timeout: float | None = None) -> tuple[float, list[int]] | None: ...

    # optional: ``urgent``, set True while every note-on is answered at once (harmonize mode), so
    # a polled port reads its input more often then (livegen/io/midi_in.py)


@dataclass
class SessionConfig:
    """What one session does; presets and CLI flags fill this in."""

    gap_s: float = 0.5
    length: int = 32
    max_seconds: float = 20.0
    sampling: SamplingParams = field(default_factory=live_params)
    mode: str = "call-response"
    channel: int = 0  # MIDI channel (0-15) the answer plays on
    program: int | None = 0  # GM program sent at start; None sends none
    human_channel: int = 1  # channel that passthrough plays the player's notes on
    input_channels: frozenset[int] | None = None  # None listens to every channel
    min_notes: int = 1
    max_listen_s: float | None = 30.0
    end_call_cc: int | None = None
    adaptive_gap: bool = False
    window: int = 64
    velocity_scale: float = 1.0
    latency_s: float = 0.0  # added to every answer note's time
    quantize: str = "off"  # "1/16"...: snap answer onsets to the clock's grid (else the phrase tempo)
    gap_beats: float = 0.0  # > 0: the gap in beats whenever a tempo is known
    controls: ControlMap = field(default_factory=ControlMap)
    name: str = "default"
    voices: int = 3  # harmonize mode: voices added to each melody note
    harmonize: str = "below"  # harmonize mode: below, above or around the melody
    memory_reset: bool = False  # choosing this preset clears the session memory

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.quantize != "off" and self.quantize not in DIVISIONS:
            raise ValueError(f"quantize must be off or one of {', '.join(DIVISIONS)}, got {self.quantize!r}")
        check_placement(self.voices, self.harmonize)

    def harmonize_settings(self) -> HarmonizeSettings:
        return HarmonizeSettings(self.voices, self.harmonize, self.sampling, self.channel, self.velocity_scale)


class Session:
    """Listens to one MessageSource and answers through a scheduler into sinks."""

    def __init__(
        self,
        source: MessageSource,
        predictor: Predictor,
        output: Sink,
        config: SessionConfig | None = None,
        passthrough: Iterable[Sink] = (),
        recorder: RecordingSink | None = None,
        log: Callable[[dict], None] | None = None,
        clock: Clock = time.monotonic,
        switch: Sequence[SessionConfig] = (),
        voicing: ModelVoicing | None = None,
        memory: SessionMemory | None = None,
    ) -> None:
        self.config = config = config or SessionConfig()
        self.source = source
        self.output = output
        self.passthrough = list(passthrough)
        self.recorder = recorder
        self.clock = clock
        self._write_log = log or (lambda record: None)
        self._log = self.emit  # every record also reaches the observers
        self.observers: list[Callable[[dict], None]] = []  # see emit(): the OSC sender, the view
        self._commands: queue.SimpleQueue[tuple[str, object, float]] = queue.SimpleQueue()
        self._poll_s = POLL_INTERVAL
        self._stage_sent: str | None = None
        self.assembler = NoteAssembler(config.input_channels)
        self.window = Window(config.window)
        self.phrase = PhraseDetector(
            config.gap_s,
            min_notes=config.min_notes,
            max_listen_s=config.max_listen_s,
            end_call_cc=config.end_call_cc,
            adaptive=config.adaptive_gap,
        )
        self.scheduler = Scheduler(output, clock=clock, log=self._log)
        self.scheduler_thread = SchedulerThread(self.scheduler)
        self.timing = TimedScheduler(self.scheduler)
        self.worker = ResponseWorker(predictor, self.timing, log=self._log, clock=clock)
        self.harmonizer = Harmonizer(self.scheduler, self.worker, voicing, clock=clock, log=self._log)
        self.switch = list(switch)
        self.memory = memory  # the predictor's session memory, cleared by a CC or a preset
        self._unswitched: set[int] = set()  # program numbers with no preset, already reported
        self.tempo = ClockFollower()
        self._model_beat: float | None = None  # the clock beat the model's running tempo snaps to
        self.muted = False
        self.panics = 0
        self._state_sent: str | None = None
        self._tags = itertools.count(1)
        self._speculation: tuple[int, float, int, ResponseRequest] | None = None  # (tag, start_at, fed, request)
        self._playing: int | None = None  # tag of the answer that was triggered
        self._fed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pace_input()
        self.phrases = 0
        self.barge_ins = 0

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("session already started")
        if self.config.program is not None:
            self.output.program(self.config.channel, self.config.program)
        self.scheduler_thread.start()
        self.worker.start()
        self._thread = threading.Thread(target=self._run, name="livegen-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 1.5) -> None:
        """Stop every thread, close what the answer opened (note-offs, CC 123), keep the recording."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        left = lambda: max(0.1, deadline - time.monotonic())  # noqa: E731 - shared time budget
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        # Each step runs even if one before it failed: a bug in one must not leave notes on.
        self._guarded("stop", self.harmonizer.close_all)
        self._guarded("stop", self._cancel_answers)
        self._guarded("stop", self.scheduler_thread.stop, left())
        self._guarded("stop", self.scheduler.close)  # note-offs for everything sounding, CC 123 per used channel
        self._guarded("stop", self.worker.stop, left())
        now = self.clock()
        for event in self._guarded("stop", self.assembler.flush, now) or ():  # keys still held: released now
            self._guarded("stop", self._handle, event, now)
        self._silence_passthrough()

    def _cancel_answers(self) -> None:
        for tag in (self._playing, self._speculation[0] if self._speculation else None):
            if tag is not None:
                self.worker.cancel(tag)

    def _guarded(self, where: str, action: Callable[..., object], *args: object) -> object:
        """``action(*args)``; an exception is logged as an ``error`` event instead of raised."""
        try:
            return action(*args)
        except Exception as exc:
            self._log({"event": "error", "t": self.clock(), "message": f"{where}: {type(exc).__name__}: {exc}"})
            return None

    def _silence_passthrough(self) -> None:
        for sink in self.passthrough:
            if not sink.closed:
                self._guarded("passthrough", sink.all_notes_off)

    def __enter__(self) -> "Session":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def light(self) -> str:
        """idle / listening / playing: what the state output CC shows."""
        if self._playing is not None and self.scheduler.busy:
            return "playing"
        return "listening" if self.phrase.notes or self.phrase.held else "idle"

    @property
    def stage(self) -> str:
        """idle / listening / thinking / playing, for OSC and the view.  Thinking: every key is
        released and the answer is being sampled or held for the gap's end."""
        if self._playing is not None and self.scheduler.busy:
            return "playing"
        if self.worker.responding is not None or self._speculation is not None:
            return "thinking"
        return "listening" if self.phrase.notes or self.phrase.held else "idle"

    # -- observers and commands (any thread) ------------------------------------------------

    def emit(self, record: dict) -> None:
        """Log ``record`` and show it to every observer.  Observers are called on the thread
        that emits (engine, scheduler, worker), so they must only queue, never wait."""
        self._write_log(record)
        self._notify(record)

    def _notify(self, record: dict) -> None:
        for observer in self.observers:
            try:
                observer(record)
            except Exception as exc:  # an observer must not stop the music
                self._write_log({"event": "error", "t": self.clock(), "message": f"observer: {type(exc).__name__}: {exc}"})

    def enable_commands(self) -> None:
        """Called (before start) by whoever will call ``command``: the engine thread then looks
        for commands every COMMAND_POLL_S instead of POLL_INTERVAL."""
        self._poll_s = COMMAND_POLL_S

    def command(self, name: str, value: object = True) -> None:
        """Change a setting from another thread (OSC, the view) as a knob would: the engine
        thread applies it through the same path as a CC (``_on_control``) and logs it."""
        self._commands.put((name, value, self.clock()))

    @property
    def state(self) -> str:
        """listening / thinking / playing, for the status line."""
        if self.worker.responding is not None:
            return "thinking"
        if self._playing is not None and self.scheduler.busy:
            return "playing"
        return "listening"

    # -- engine thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            deadline = self.phrase.next_deadline()
            timeout = self._poll_s if deadline is None else min(self._poll_s, max(0.0, deadline - self.clock()))
            try:
                item = self.source.get(timeout=timeout)
                while item is not None:
                    t, message = item
                    end = self.phrase.poll(t)  # a phrase end due before this message came first
                    if end is not None:
                        self._on_phrase_end(end, self.clock())
                    for event in self.assembler.feed(message, t):
                        self._handle(event, t)
                    item = self.source.get(timeout=0)
                self._run_commands()
                self._after_events(self.clock())
                self._send_state()
                self._notify_stage()
            except Exception as exc:  # never let one bad message end the session
                self._log({"event": "error", "t": self.clock(), "message": f"engine: {type(exc).__name__}: {exc}"})

    def _handle(self, event: Event, t: float) -> None:
        if isinstance(event, ClockTick):
            self.tempo.tick(event.t)
            return
        if isinstance(event, (ClockStart, ClockStop, ClockContinue)):
            {ClockStart: self.tempo.start, ClockStop: self.tempo.stop, ClockContinue: self.tempo.cont}[type(event)](event.t)
            return
        if isinstance(event, ControlChanged):
            action = self.config.controls.interpret(event.channel, event.control, event.value)
            if action is not None:
                self._on_control(*action, event.t)
        elif isinstance(event, ProgramChanged):
            self._on_program(event)
        self.window.on_event(event)
        self.phrase.on_event(event)
        if isinstance(event, NoteStarted):
            self._on_key(event)
            if self.observers:
                self._notify({"event": "note_on", "who": "player", "channel": event.channel, "pitch": event.pitch,
                              "velocity": event.velocity, "t": event.t})
            if self.config.mode == HARMONIZE:  # before the passthrough: the voices are the hurry
                self.harmonizer.note_on(event.pitch, event.velocity, event.channel, event.t,
                                        self.config.harmonize_settings(), self.muted)
            for sink in self.passthrough:  # one failing output must not keep the note from the others
                self._guarded("passthrough", sink.note_on, self.config.human_channel, event.pitch, event.velocity)
        elif isinstance(event, NoteCompleted):
            self.harmonizer.note_off(event.channel, event.note.pitch, event.t, event.note.duration)
            if self.observers:
                self._notify({"event": "note_off", "who": "player", "channel": event.channel,
                              "pitch": event.note.pitch, "t": event.t})
            for sink in self.passthrough:
                self._guarded("passthrough", sink.note_off, self.config.human_channel, event.note.pitch)
            if self.recorder is not None:
                self.recorder.add_note(event.note)
        rows = self.window.pending_for_model()
        if rows and self.config.mode != HARMONIZE:  # harmonize fed each note at its note-on
            self.worker.feed(rows)
            self._fed += len(rows)

    def _on_key(self, event: NoteStarted) -> None:
        """A key went down: drop the speculative answer, and barge in on a playing one."""
        self._drop_speculation()
        if self._playing is not None and self.config.mode != "overlap":
            tag, self._playing = self._playing, None
            self.worker.cancel(tag)
            if self.scheduler.cancel(tag):
                self.barge_ins += 1
                self._log({"event": "barge_in", "t": event.t})

    def _after_events(self, now: float) -> None:
        self._follow_tempo(now)
        end = self.phrase.poll(now)
        if end is not None:
            self._on_phrase_end(end, now)
            return
        deadline = self.phrase.next_deadline()
        if deadline is None or self.phrase.held or self.muted or self.config.mode == HARMONIZE:
            return
        if self._speculation is not None and self._speculation[1:3] == (deadline, self._fed):
            return
        self._drop_speculation()
        tag, request = self._answer(deadline)
        self._speculation = (tag, deadline, self._fed, request)

    def _on_phrase_end(self, end: PhraseEnd, now: float) -> None:
        self.phrases += 1
        record = {"event": "trigger", "t": end.t, "notes": end.notes, "reason": end.reason}
        if end.notes == 0 or self.muted or self.config.mode == HARMONIZE:  # nothing to answer
            self._log({**record, "muted": self.muted} if self.muted else record)
            self._drop_speculation()
            return
        if self._playing is not None and self.config.mode == "overlap":
            self.worker.cancel(self._playing)  # a new answer replaces the rest of the old one
            self.scheduler.cancel(self._playing)
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation[1:3] == (end.t, self._fed):
            self._playing, request = speculation[0], speculation[3]
        else:
            if speculation is not None:
                self._cancel(speculation[0])
            self._playing, request = self._answer(max(end.t, now))
        p = request.params
        grid = self.timing.grid_of(request.tag)
        self._log({**record, "temperature": p.temperature})
        self._log({"event": "respond", "t": now, "tag": request.tag, "start_at": request.start_at,
                   "temperature": p.temperature, "top_p": p.top_p, "length": request.length,
                   "mode": self.config.mode, "preset": self.config.name, "memory": p.memory, "key_prior": p.key_prior,
                   "register_prior": p.register_prior, "rhythm_temperature": p.rhythm_temperature,
                   "grid": None if grid is None else [grid.origin, grid.step],
                   "grid_from": None if grid is None else grid.source})

    def _answer(self, start_at: float) -> tuple[int, ResponseRequest]:
        config = self.config
        tag = next(self._tags)
        request = ResponseRequest(
            tag=tag,
            start_at=start_at,
            length=config.length,
            max_seconds=config.max_seconds,
            params=config.sampling,
            channel=config.channel,
            velocity_scale=config.velocity_scale,
        )
        self.timing.set_timing(tag, self._grid(start_at), config.latency_s)
        self.worker.respond(request)
        return tag, request

    # -- tempo, live control, presets (engine thread) ---------------------------------------

    def _grid(self, start_at: float) -> Grid | None:
        """The grid this answer snaps to: the MIDI clock's, else the phrase tempo's, or None."""
        if self.config.quantize == "off":
            return None
        # Is the clock running *now*: a speculative answer's start is a whole gap ahead, later
        # than any tick received, which would read as a stopped clock.
        if self.tempo.present(self.clock()):
            return self.tempo.grid(self.config.quantize)
        onsets = self.phrase.onsets or self.phrase.last_onsets
        beat = phrase_beat(onsets)
        if beat is None:
            return None
        return Grid(onsets[0], beat * DIVISIONS[self.config.quantize], source="phrase")

    def _follow_tempo(self, now: float) -> None:
        """Tell the model the clock's beat (the best tempo estimate) when it changes; with
        ``gap_beats``, keep the phrase gap at that many beats of the known tempo."""
        clock_beat = self.tempo.beat if self.tempo.present(now) else None
        known = self._model_beat
        if (clock_beat is None) != (known is None) or (clock_beat and abs(clock_beat - known) > 0.005 * known):
            self._model_beat = clock_beat
            self.worker.call(lambda predictor, beat=clock_beat: _set_beat(predictor, beat))
        if not self.config.gap_beats:
            return
        beat = self.tempo.beat if self.tempo.present(now) else phrase_beat(self.phrase.onsets)
        if beat is None:
            gap = self.config.gap_s
        else:
            gap = min(max(self.config.gap_beats * beat, 0.02), 10.0)
        if abs(gap - self.phrase.gap_s) > 0.01 * self.phrase.gap_s:
            self.phrase.gap_s = gap

    def _run_commands(self) -> None:
        while True:
            try:
                name, value, t = self._commands.get_nowait()
            except queue.Empty:
                return
            self._on_control(name, value, t)

    def _notify_stage(self) -> None:
        if self.observers:
            stage = self.stage
            if stage != self._stage_sent:
                self._stage_sent = stage
                self._notify({"event": "state", "state": stage, "t": self.clock()})

    def _on_control(self, name: str, value: object, t: float) -> None:
        self._log({"event": "control", "name": name, "value": getattr(value, "name", value), "t": t})
        config = self.config
        if name in ("temperature", "top_p"):
            self.config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, **{name: value}))
        elif name == "length":
            self.config = dataclasses.replace(config, length=value)
        elif name == "gap":
            self.config = dataclasses.replace(config, gap_s=value, gap_beats=0.0)
            self.phrase.gap_s = value
        elif name == "mode":
            self.config = dataclasses.replace(config, mode=value)
            self._switching_mode(config.mode, value)
        elif name == "memory":
            self.config = dataclasses.replace(config, sampling=dataclasses.replace(config.sampling, memory=value))
        elif name == "memory_reset":
            self.clear_memory(t)
        elif name == "panic":
            self.panic(t)
        elif name == "mute":
            if value and not self.muted:
                self.panic(t)
            self.muted = bool(value)
        elif name == "end_call":  # from OSC or the view; a controller's goes to the phrase detector itself
            self.phrase.end_call(t)
        elif name == "preset":  # a SessionConfig, loaded by whoever sent it (not on this thread)
            self.apply(value)
        self._drop_speculation()  # the next answer is sampled with the new settings

    def clear_memory(self, t: float) -> None:
        """Forget what the player played this session (the memory locks itself against the worker)."""
        if self.memory is not None:
            self.memory.clear()
            self._log({"event": "memory_reset", "t": t})

    def panic(self, t: float | None = None) -> None:
        """Silence everything at once: cancel every answer, note-offs now, CC 123 per channel."""
        self.panics += 1
        self.harmonizer.close_all(t)
        self._drop_speculation()
        if self._playing is not None:
            self.worker.cancel(self._playing)
            self._playing = None
        self.scheduler.cancel_all()
        channels = set(self.scheduler.sink.channels_used) | {self.config.channel}
        for channel in sorted(channels):
            try:
                self.output.control(channel, mb.CC_ALL_NOTES_OFF, 0)
            except Exception as exc:
                self._log({"event": "error", "t": self.clock(), "message": f"panic: {exc}"})
        self._silence_passthrough()

    def _on_program(self, event: ProgramChanged) -> None:
        controls = self.config.controls
        if controls.channel is not None and event.channel != controls.channel:
            return
        if event.program >= len(self.switch):
            if event.program not in self._unswitched:  # said once per program, not on every press
                self._unswitched.add(event.program)
                self._log({"event": "error", "t": event.t,
                           "message": f"program change {event.program}: only {len(self.switch)} presets to switch to"})
            return
        self.apply(self.switch[event.program])
        self._log({"event": "preset", "t": event.t, "program": event.program, "name": self.config.name})

    def apply(self, config: SessionConfig) -> None:
        """Switch settings (engine thread); the next answer uses them, the playing one goes on
        (unless the switch goes into or out of harmonize mode: then nothing goes on)."""
        previous, self.config = self.config, config
        if previous.mode == HARMONIZE or config.mode == HARMONIZE:
            self._switching_mode(previous.mode, config.mode, always=previous.mode == config.mode)
        self.phrase.gap_s = config.gap_s
        self.phrase.min_notes = config.min_notes
        self.phrase.max_listen_s = config.max_listen_s
        self.phrase.end_call_cc = config.end_call_cc
        self.phrase.adaptive = config.adaptive_gap
        if config.memory_reset:
            self.clear_memory(self.clock())
        self._drop_speculation()
        if config.program is not None:
            self.output.program(config.channel, config.program)

    def _switching_mode(self, old: str, new: str, always: bool = False) -> None:
        """Into or out of harmonize mode (or from one harmonize preset to another): whatever
        sounds stops now, the answer playing and the voices alike."""
        if old == new and not always or HARMONIZE not in (old, new):
            return
        self._pace_input()
        self.harmonizer.close_all()
        self.harmonizer.forget_melody()
        self._drop_speculation()
        if self._playing is not None:
            tag, self._playing = self._playing, None
            self._cancel(tag)

    def _pace_input(self) -> None:
        """A source that polls reads faster while each note-on is answered at once."""
        if hasattr(self.source, "urgent"):
            self.source.urgent = self.config.mode == HARMONIZE

    def _send_state(self) -> None:
        cc = self.config.controls.state_out
        if cc is None:
            return
        light = self.light
        if light != self._state_sent:
            self._state_sent = light
            self.output.control(self.config.channel, cc, STATE_VALUES[light])

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._cancel(self._speculation[0])
            self._speculation = None

    def _cancel(self, tag: int) -> None:
        self.worker.cancel(tag)
        self.scheduler.cancel(tag)


def _set_beat(predictor, beat: float | None) -> None:
    """On the worker thread: a predictor that follows a running tempo snaps it to the clock's beat."""
    set_beat = getattr(predictor, "set_beat", None)
    if set_beat is not None:
        set_beat(beat)
