"""A playing session: the engine thread that turns incoming MIDI into answers.

    input.get() -> NoteAssembler -> Window -> worker.feed      (the model keeps up while you play)
                              \\-> PhraseDetector -> answer    (speculative, timed at the gap's end)
                              \\-> passthrough sinks           (hear yourself through the synth)

Speculation: as soon as everything is released, the gap's end is known.  The worker samples the
answer right away and the scheduler holds it with its first note due exactly at that instant.  If
the player plays on, the answer is cancelled before a note of it sounds; if not, it starts on
time, so the latency is the scheduler's wake-up jitter, not the model's inference time.

Barge-in: a key pressed while the answer plays cancels it at once (note-offs sent), unless the
mode is "overlap".  Every thread is started by ``start()`` and joined by ``stop()``, which leaves
nothing sounding.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol

from livegen.engine.assembler import Event, NoteAssembler, NoteCompleted, NoteStarted
from livegen.engine.clock import Clock
from livegen.engine.phrase import PhraseDetector, PhraseEnd
from livegen.engine.scheduler import Scheduler, SchedulerThread
from livegen.engine.window import Window
from livegen.engine.worker import Predictor, ResponseRequest, ResponseWorker
from livegen.io.sinks import RecordingSink, Sink
from livegen.model.params import SamplingParams

MODES = ("call-response", "overlap", "mirror")
POLL_INTERVAL = 0.05  # seconds: the longest the engine thread sleeps without checking for stop


class MessageSource(Protocol):
    """Where played MIDI comes from: a port's queue, or the demo's in-process player."""

    def get(self, timeout: float | None = None) -> tuple[float, list[int]] | None: ...


@dataclass
class SessionConfig:
    """What one session does; presets and CLI flags fill this in."""

    gap_s: float = 0.5
    length: int = 32
    max_seconds: float = 20.0
    sampling: SamplingParams = field(default_factory=SamplingParams)
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

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")


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
    ) -> None:
        self.config = config = config or SessionConfig()
        self.source = source
        self.output = output
        self.passthrough = list(passthrough)
        self.recorder = recorder
        self.clock = clock
        self._log = log or (lambda record: None)
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
        self.worker = ResponseWorker(predictor, self.scheduler, log=self._log, clock=clock)
        self._tags = itertools.count(1)
        self._speculation: tuple[int, float, int] | None = None  # (tag, start_at, notes fed)
        self._playing: int | None = None  # tag of the answer that was triggered
        self._fed = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
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
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._playing is not None:
            self.worker.cancel(self._playing)
        if self._speculation is not None:
            self.worker.cancel(self._speculation[0])
        self.scheduler_thread.stop(max(0.1, deadline - time.monotonic()))
        self.scheduler.close()  # note-offs for everything sounding, CC 123 per used channel
        self.worker.stop(max(0.1, deadline - time.monotonic()))
        now = self.clock()
        for event in self.assembler.flush(now):
            self._handle(event, now)
        for sink in self.passthrough:
            if not sink.closed:
                sink.all_notes_off()

    def __enter__(self) -> "Session":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

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
            timeout = POLL_INTERVAL if deadline is None else min(POLL_INTERVAL, max(0.0, deadline - self.clock()))
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
                self._after_events(self.clock())
            except Exception as exc:  # never let one bad message end the session
                self._log({"event": "error", "t": self.clock(), "message": f"engine: {type(exc).__name__}: {exc}"})

    def _handle(self, event: Event, t: float) -> None:
        self.window.on_event(event)
        self.phrase.on_event(event)
        if isinstance(event, NoteStarted):
            self._on_key(event)
            for sink in self.passthrough:
                sink.note_on(self.config.human_channel, event.pitch, event.velocity)
        elif isinstance(event, NoteCompleted):
            for sink in self.passthrough:
                sink.note_off(self.config.human_channel, event.note.pitch)
            if self.recorder is not None:
                self.recorder.add_note(event.note)
        rows = self.window.pending_for_model()
        if rows:
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
        end = self.phrase.poll(now)
        if end is not None:
            self._on_phrase_end(end, now)
            return
        deadline = self.phrase.next_deadline()
        if deadline is None or self.phrase.held:
            return
        if self._speculation is not None and self._speculation[1:] == (deadline, self._fed):
            return
        self._drop_speculation()
        self._speculation = (self._answer(deadline), deadline, self._fed)

    def _on_phrase_end(self, end: PhraseEnd, now: float) -> None:
        self.phrases += 1
        self._log({"event": "trigger", "t": end.t, "notes": end.notes, "reason": end.reason})
        if end.notes == 0:  # an end-call with nothing played: nothing to answer
            self._drop_speculation()
            return
        if self._playing is not None and self.config.mode == "overlap":
            self.worker.cancel(self._playing)  # a new answer replaces the rest of the old one
            self.scheduler.cancel(self._playing)
        speculation, self._speculation = self._speculation, None
        if speculation is not None and speculation[1:] == (end.t, self._fed):
            self._playing = speculation[0]
        else:
            if speculation is not None:
                self._cancel(speculation[0])
            self._playing = self._answer(max(end.t, now))

    def _answer(self, start_at: float) -> int:
        config = self.config
        tag = next(self._tags)
        self.worker.respond(
            ResponseRequest(
                tag=tag,
                start_at=start_at,
                length=config.length,
                max_seconds=config.max_seconds,
                params=config.sampling,
                channel=config.channel,
                velocity_scale=config.velocity_scale,
            )
        )
        return tag

    def _drop_speculation(self) -> None:
        if self._speculation is not None:
            self._cancel(self._speculation[0])
            self._speculation = None

    def _cancel(self, tag: int) -> None:
        self.worker.cancel(tag)
        self.scheduler.cancel(tag)
