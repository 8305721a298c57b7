"""Sampling settings, importable without torch (the engine and presets use them)."""

from __future__ import annotations

from dataclasses import dataclass

# livegen run's rhythm temperature (presets' default).  Why below 1: the step and duration heads are
# broader than the music they were trained on (augmentation jitters onsets and stretches tempo), so
# answers sampled at 1 held stray long notes over the next onsets: twice the music's held notes
# per onset, polyphony 1.99 against 1.61.  Chosen on the validation split (3 seeds, README): 0.8
# brought the note-length overlaps from 0.91 / 0.90 to 0.96 / 0.96 and polyphony from 0.69 to 0.74.
DEFAULT_RHYTHM_TEMPERATURE = 0.8


@dataclass(frozen=True)
class SamplingParams:
    """How adventurous the continuation is.

    temperature: divides the logits; 0 picks the most likely class, 1 samples the model as
    trained, above 1 flattens. top_p: keeps the smallest set of classes whose probability
    reaches p. pitch_low/pitch_high: inclusive MIDI range the answer may use. memory: how much
    the session memory's prediction weighs against the model's (0 = none, 1 = the memory alone).
    key_prior: how much less likely a pitch outside the key of the last notes is (0 = the model as
    trained, 0.5 = half as likely, 1 = never; see livegen.model.key_prior). register_prior: how
    much less likely a pitch an octave beyond the span of the last notes is (0 = the model as
    trained, 1 = never beyond it; see livegen.model.register_prior). rhythm_temperature: scales the
    temperature of the step and duration heads (1 = as ``temperature``; below 1 the rhythm keeps
    to the model's likeliest steps and note lengths while the pitches stay as adventurous).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    pitch_low: int = 21
    pitch_high: int = 108
    memory: float = 0.0  # weight of the session memory (livegen.model.blend): 0 = the model alone
    key_prior: float = 0.0  # livegen run's default is key_prior.DEFAULT_STRENGTH (the presets')
    register_prior: float = 0.0  # livegen run's default is register_prior.DEFAULT_STRENGTH
    rhythm_temperature: float = 1.0  # step and duration sample at temperature x this (live: DEFAULT_RHYTHM_TEMPERATURE)

    @property
    def time_temperature(self) -> float:
        """The temperature of the step and duration heads: ``temperature`` scaled by
        ``rhythm_temperature``, so temperature 0 stays wholly deterministic."""
        return self.temperature * self.rhythm_temperature

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 10.0:
            raise ValueError(f"temperature must be in [0, 10], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.memory <= 1.0:
            raise ValueError(f"memory must be in [0, 1], got {self.memory}")
        if not 0.0 <= self.rhythm_temperature <= 2.0:
            raise ValueError(f"rhythm_temperature must be in [0, 2], got {self.rhythm_temperature}")
        if not 0.0 <= self.key_prior <= 1.0:
            raise ValueError(f"key_prior must be in [0, 1], got {self.key_prior}")
        if not 0.0 <= self.register_prior <= 1.0:
            raise ValueError(f"register_prior must be in [0, 1], got {self.register_prior}")
        if not 0 <= self.pitch_low <= self.pitch_high <= 127:
            raise ValueError(f"pitch range must satisfy 0 <= low <= high <= 127, got {self.pitch_low}-{self.pitch_high}")


def live_params(**changes) -> SamplingParams:
    """The sampling ``livegen run`` does unless told otherwise (the presets' defaults: the key and
    register priors on, the rhythm temperature), with ``changes``; the benchmarks sample this way too."""
    from livegen.model.key_prior import DEFAULT_STRENGTH as KEY
    from livegen.model.register_prior import DEFAULT_STRENGTH as REGISTER

    return SamplingParams(**{"key_prior": KEY, "register_prior": REGISTER,
                             "rhythm_temperature": DEFAULT_RHYTHM_TEMPERATURE, **changes})
