#!/usr/bin/env bash
# Set up (if needed) and run livegen's main job: the live daemon when this machine has a MIDI
# keyboard and a sound card, the demo (built-in phrase -> engine -> MIDI + WAV) otherwise.
# Extra arguments go to livegen (e.g. bash scripts/run.sh --temperature 0.9).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if compgen -G "/dev/snd/midiC*" >/dev/null && compgen -G "/dev/snd/pcmC*p" >/dev/null && [ -e /dev/snd/seq ]; then
  echo "run: MIDI keyboard and sound card found: livegen run (connect your keyboard to livegen:in)"
  exec .venv/bin/livegen run "$@"
fi
echo "run: no MIDI keyboard or sound card here: running livegen demo instead"
exec .venv/bin/livegen demo "$@"
