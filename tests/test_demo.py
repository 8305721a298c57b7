import subprocess
import sys
import wave

import numpy as np
import pretty_midi

from factories import quick_model_dir


def test_demo_plays_the_built_in_phrase_and_writes_an_audible_wav_and_a_midi_file(tmp_path):
    model = quick_model_dir(tmp_path / "quick")
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "livegen", "demo", "--model", str(model), "--out", str(out), "--length", "8",
         "--gap-ms", "300", "--seed", "2", "--audio-driver", "file-that-does-not-exist"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "synth off" in result.stdout  # headless: no audio device, the demo still runs
    assert f"wrote {out / 'demo.mid'}: 15 player notes, 8 livegen notes" in result.stdout

    tracks = {inst.name: inst for inst in pretty_midi.PrettyMIDI(str(out / "demo.mid")).instruments}
    human, answer = tracks["human"].notes, tracks["livegen"].notes
    assert [n.pitch for n in human][:5] == [73, 71, 69, 71, 73]  # BWV 66.6's soprano
    assert len(answer) == 8
    assert min(n.start for n in answer) >= max(n.end for n in human) + 0.25  # after the gap

    with wave.open(str(out / "demo.wav")) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (44100, 2, 2)
        audio = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).reshape(-1, 2)
    rate = 44100
    answer_start = int(min(n.start for n in answer) * rate)
    answer_audio = audio[answer_start : answer_start + rate // 2].astype(float)
    assert np.sqrt(np.mean(answer_audio**2)) > 100  # the answer is audible
