"""Speech-to-text on WAVs spoken by espeak-ng, and the no-microphone message."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from edge.apps.assistant import speech
from edge.errors import InvalidOption

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (apt-get install espeak-ng)")


def speak(text: str, path) -> str:
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True)
    return str(path)


DIGITS = {"seven": "7", "twelve": "12", "ten": "10"}


def words(text: str) -> list[str]:
    """Lower-case words without punctuation; Whisper may write small numbers either way."""
    plain = "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()
    return [DIGITS.get(w, w) for w in plain]


@needs_espeak
@pytest.mark.parametrize("said,heard", [
    ("what time is it", ["what", "time", "is", "it"]),
    ("what is 12 times 7", ["what", "is", "12", "times", "7"]),
    ("convert 10 kilometers to miles", ["convert", "10", "kilometers", "to", "miles"]),
])
def test_transcribe_spoken_wav(tmp_path, said, heard):
    assert words(speech.transcribe(speak(said, tmp_path / "q.wav"))) == heard


@needs_espeak
def test_transcribe_array(tmp_path):
    import wave

    import numpy as np

    wav = speak("set a timer", tmp_path / "a.wav")
    with wave.open(wav) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    # Whisper takes 16 kHz arrays; espeak writes 22.05 kHz.
    at16 = np.interp(np.arange(0, len(pcm), rate / speech.SAMPLE_RATE), np.arange(len(pcm)), pcm).astype(np.float32)
    assert words(speech.transcribe(at16)) == ["set", "a", "timer"]


def test_bad_audio_files(tmp_path):
    with pytest.raises(InvalidOption, match="No audio file at"):
        speech.transcribe(tmp_path / "missing.wav")
    bad = tmp_path / "notes.wav"
    bad.write_text("this is not audio")
    with pytest.raises(InvalidOption, match="Cannot decode .* as audio"):
        speech.transcribe(bad)


def test_no_microphone_says_so():
    try:
        speech.check_microphone()
    except speech.NoAudioDevice as exc:
        msg = str(exc)
        assert "--audio-file" in msg and "\n" not in msg
    else:
        pytest.skip("this machine has a microphone")
