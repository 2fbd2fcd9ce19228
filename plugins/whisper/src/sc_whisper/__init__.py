"""whisper: speech to text with faster-whisper (CTranslate2): the text, SRT and VTT subtitles,
and timed segments (and words) for timing animation to speech.

faster-whisper is imported when a model loads, not when the worker lists plugins.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from sc_whisper import subtitles
from stablecore import Audio, Context, Field, ModelFile, Numbers, Text, job, models_folder
from stablecore.modelfiles import models_cache

DEFAULT = "small"
SIZES = {name: f"Systran/faster-whisper-{name}" for name in (
    "tiny", "tiny.en", "base", "base.en", "small", "small.en", "medium", "medium.en",
    "large-v1", "large-v2", "large-v3")} | {"turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo"}
MODEL_FILES = [ModelFile(repo_id=SIZES[DEFAULT], filename=f, licence="MIT")
               for f in ("config.json", "model.bin", "tokenizer.json", "vocabulary.txt")]
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
SAMPLE_RATE = 16000
COLUMNS = ["start", "end", "avg_logprob", "no_speech_prob"]


@dataclass
class Transcript:
    text: Text
    srt: Text  # SubRip subtitles
    vtt: Text  # WebVTT subtitles
    segments: Numbers  # a row per segment: start, end (seconds), avg_logprob, no_speech_prob
    details: dict[str, Any]  # language, its probability, duration, segments with their words


def model_path(name: str) -> Path:
    """The folder of a CTranslate2 Whisper model: one in the models folder's whisper/, or a
    size name or repo id whose files are in the Hugging Face cache (never downloaded here)."""
    folder = models_folder("whisper", os.environ)
    if folder is not None and ".." not in Path(name).parts and (folder / name / "model.bin"
                                                                ).is_file():
        return folder / name
    repo = SIZES.get(name, name)
    if not REPO_ID.match(repo):
        raise ValueError(f"model {name!r} must be a size ({', '.join(SIZES)}), a repo id "
                         f"(org/name) or a model folder in {folder}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, cache_dir=models_cache(os.environ).hub,
                                      local_files_only=True))
    except Exception:
        raise ValueError(f"model {name} ({repo}) is not downloaded: `stable-core models pull "
                         f"whisper` fetches {SIZES[DEFAULT]}; other sizes: "
                         f"`huggingface-cli download {repo}`") from None


def load(name: str, device: str) -> Any:
    from faster_whisper import WhisperModel

    path = model_path(name)
    kind, _, index = device.partition(":")
    cuda = kind == "cuda"
    return WhisperModel(str(path), device="cuda" if cuda else "cpu",
                        device_index=int(index or 0), compute_type="float16" if cuda else "int8")


def read_audio(audio: Audio) -> np.ndarray:
    from faster_whisper import decode_audio

    try:
        samples = decode_audio(str(audio.path), sampling_rate=SAMPLE_RATE)
    except Exception as e:
        raise ValueError(f"cannot read {audio.path.name} as audio: {type(e).__name__}: "
                         f"{str(e).strip() or 'no audio stream'}") from None
    if samples.size == 0:
        raise ValueError(f"{audio.path.name} holds no audio samples")
    return samples


@job(description="Transcribe or translate speech with Whisper (faster-whisper): the text, "
                 "SRT and VTT subtitles, and timed segments and words.", model_param="model")
def transcribe(
    ctx: Context,
    audio: Audio = Field(description="speech: wav, flac, ogg, mp3 (or any file FFmpeg reads)"),
    model: str = Field(DEFAULT, min_length=1, description="a size (tiny, base, small, medium, "
                       "large-v3, turbo, ...), a CTranslate2 repo id, or a folder in the "
                       "models folder's whisper/"),
    language: str = Field("auto", pattern=r"^(auto|[a-z]{2,3})$", description="the spoken "
                          "language's code (en, de, ja, ...) or auto to detect it"),
    task: Literal["transcribe", "translate"] = Field("transcribe", description="translate: "
                                                     "English text from any language"),
    word_timestamps: bool = Field(False, description="time each word too (in details)"),
    beam_size: int = Field(5, ge=1, le=10, description="beam search width; 1 = greedy"),
    temperature_fallback: bool = Field(True, description="retry a window at higher "
                                       "temperatures when decoding fails its checks"),
    vad: bool = Field(False, description="skip silence with the Silero VAD first"),
    initial_prompt: str = Field("", max_length=2000, description="text that primes the "
                                "style and vocabulary (names, punctuation)"),
) -> Transcript:
    # 1. the audio and the model
    samples = read_audio(audio)
    whisper = ctx.cache(model, lambda: load(model, ctx.device))
    if language != "auto" and language not in whisper.supported_languages:
        raise ValueError(f"language {language!r} is not one this model knows: "
                         f"{', '.join(whisper.supported_languages)}")
    # 2. decode window by window; each segment is a progress step (and a chance to cancel)
    temperatures = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0] if temperature_fallback else [0.0]
    found, info = whisper.transcribe(
        samples, language=None if language == "auto" else language, task=task,
        beam_size=beam_size, word_timestamps=word_timestamps, vad_filter=vad,
        temperature=temperatures, initial_prompt=initial_prompt or None)
    duration = float(info.duration)
    total = max(1, round(duration * 1000))
    segments = []
    for segment in found:
        start = min(max(0.0, float(segment.start)), duration)
        end = min(max(start, float(segment.end)), duration)
        words = [{"start": round(float(w.start), 3), "end": round(float(w.end), 3),
                  "word": w.word, "probability": round(float(w.probability), 4)}
                 for w in segment.words or []]
        segments.append({"start": round(start, 3), "end": round(end, 3),
                         "text": segment.text.strip(),
                         "avg_logprob": float(segment.avg_logprob),
                         "no_speech_prob": float(segment.no_speech_prob), "words": words})
        ctx.progress(min(total, round(end * 1000)), total)
    # 3. the outputs
    timed = [(s["start"], s["end"], s["text"]) for s in segments]
    table = np.array([[s[c] for c in COLUMNS] for s in segments]).reshape(-1, len(COLUMNS))
    ctx.log.info("whisper.transcribe: %d segment(s), %.1f s of %s audio (p=%.2f)",
                 len(segments), duration, info.language, info.language_probability)
    details = {"language": info.language,
               "language_probability": round(float(info.language_probability), 4),
               "duration": round(duration, 3), "task": task, "segments": segments}
    return Transcript(" ".join(s["text"] for s in segments if s["text"]),
                      subtitles.srt(timed), subtitles.vtt(timed), Numbers(table, COLUMNS),
                      details)
