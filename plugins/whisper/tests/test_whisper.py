"""whisper through a real server: a Whisper with random weights in the real multilingual
layout (51866 tokens: text, <|endoftext|>, <|startoftranscript|>, 100 languages, tasks,
<|notimestamps|>, 1501 timestamps), built with transformers, converted to CTranslate2 here
and stored as a pulled repo in the Hugging Face cache layout."""

from __future__ import annotations

import json
import re
import wave
from collections.abc import Iterator
from pathlib import Path

import ctranslate2
import numpy as np
import pytest
import torch
from faster_whisper.tokenizer import _LANGUAGE_CODES
from sc_whisper import COLUMNS, subtitles
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    WhisperConfig,
    WhisperForConditionalGeneration,
)

from stablecore.client import Client
from stablecore.testing import ServerProcess, fetch_json

REPO = "test/faster-whisper-random"
COMMIT = "89abcdef0123456789abcdef0123456789abcdef"
TEXT_TOKENS = 50257
# Whisper's language tokens in its own order (faster-whisper lists them alphabetically)
LANGUAGES = ("en zh de es ru ko fr ja pt tr pl ca nl ar sv it id hi fi vi he uk el ms cs ro da hu "
         "ta no th ur hr bg lt la mi ml cy sk te fa lv bn sr az sl kn et mk br eu is hy ne mn "
         "bs kk sq sw gl mr pa si km sn yo so af oc ka be tg sd gu am yi lo uz fo ht ps tk nn "
         "mt sa lb my bo tl mg as tt haw ln ha ba jw su yue")
ORDER = LANGUAGES.split()


def tiny_whisper(hf: Path, out: Path) -> None:
    """A 32-wide, one-layer Whisper: byte-level BPE text tokens (one of them "", which
    CTranslate2 takes as the sign of a multilingual vocabulary), the special tokens, then
    converted with CTranslate2's TransformersConverter."""
    assert sorted(ORDER) == sorted(_LANGUAGE_CODES)
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for word in ["", "Ġhello", "Ġworld", "."]:
        vocab[word] = len(vocab)
    while len(vocab) < TEXT_TOKENS:
        vocab[f"Ġw{len(vocab)}"] = len(vocab)
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|startoftranscript|>", *(f"<|{c}|>" for c in ORDER),
                "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>",
                "<|nocaptions|>", "<|notimestamps|>"]
    tokenizer.add_special_tokens([AddedToken(s, special=True) for s in specials])
    ids = {s: tokenizer.token_to_id(s) for s in specials}
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<|endoftext|>",
                            eos_token="<|endoftext|>", unk_token="<|endoftext|>",
                            pad_token="<|endoftext|>",
                            additional_special_tokens=specials[2:]).save_pretrained(hf)
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    suppress = {"suppress_tokens": [], "begin_suppress_tokens": [220, eot]}
    config = WhisperConfig(
        vocab_size=len(vocab) + len(specials) + 1501, num_mel_bins=80, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
        max_source_positions=1500, max_target_positions=448, pad_token_id=eot,
        bos_token_id=eot, eos_token_id=eot, decoder_start_token_id=sot, **suppress)
    model = WhisperForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot, eos_token_id=eot, pad_token_id=eot, is_multilingual=True,
        alignment_heads=[[0, 0], [0, 1]], no_timestamps_token_id=ids["<|notimestamps|>"],
        lang_to_id={f"<|{c}|>": ids[f"<|{c}|>"] for c in ORDER}, **suppress)
    model.save_pretrained(hf)
    (hf / "preprocessor_config.json").write_text(json.dumps(
        {"feature_size": 80, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30,
         "n_fft": 400}))
    ctranslate2.converters.TransformersConverter(
        str(hf), copy_files=["tokenizer.json", "preprocessor_config.json"]).convert(str(out))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("cache")
    repo = root / "hub" / f"models--{REPO.replace('/', '--')}"
    tiny_whisper(tmp_path_factory.mktemp("hf"), repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return root


@pytest.fixture(scope="module")
def stablecore_server(tmp_path_factory: pytest.TempPathFactory,
                      cache: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("stablecore") / "data",
                       models_cache=cache) as server:
        yield server


def wav(path: Path, seconds: float = 2.5, rate: int = 22050) -> Path:
    """Tone bursts with a pitch contour: speech-like enough to decode, made here."""
    t = np.arange(int(seconds * rate)) / rate
    tone = np.sin(2 * np.pi * (180 + 60 * np.sin(2 * np.pi * 3 * t)) * t)
    pcm = (0.4 * tone * (np.sin(2 * np.pi * 2 * t) > 0) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
    return path


FAST = {"model": REPO, "beam_size": 1, "temperature_fallback": False}
SRT_BLOCK = re.compile(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.*)\n")


def test_a_converted_random_model_runs_end_to_end(stablecore_client: Client,
                                                  tmp_path: Path) -> None:
    job = stablecore_client.run("whisper.transcribe", {**FAST, "word_timestamps": True},
                                {"audio": wav(tmp_path / "speech.wav")})
    assert job["state"] == "succeeded", job["error"]
    out = job["outputs"]
    details = out["details"]["value"]
    assert details["language"] in _LANGUAGE_CODES and 0 < details["language_probability"] <= 1
    assert details["duration"] == 2.5 and details["task"] == "transcribe"
    segments = details["segments"]
    assert segments and all(0 <= s["start"] <= s["end"] <= 2.5 for s in segments)
    assert any(s["words"] for s in segments)
    text = stablecore_client.download(out["text"]["id"], tmp_path / "t.txt").read_text()
    assert text == " ".join(s["text"] for s in segments if s["text"])
    srt = stablecore_client.download(out["srt"]["id"], tmp_path / "s.txt").read_text()
    assert srt == subtitles.srt((s["start"], s["end"], s["text"]) for s in segments)
    assert len(SRT_BLOCK.findall(srt)) == len(segments)
    vtt = stablecore_client.download(out["vtt"]["id"], tmp_path / "v.txt").read_text()
    assert vtt.startswith("WEBVTT\n\n00:00:")
    table = fetch_json(stablecore_client, out["segments"], tmp_path)
    assert table["columns"] == COLUMNS
    assert [row[:2] for row in table["values"]] == [[s["start"], s["end"]] for s in segments]
    progress = [e for e in stablecore_client.events(job["id"]) if e["type"] == "job.progress"]
    assert progress and progress[-1]["data"]["total"] == 2500


def test_a_language_and_translate_are_passed_on(stablecore_client: Client,
                                                tmp_path: Path) -> None:
    job = stablecore_client.run("whisper.transcribe",
                                {**FAST, "language": "de", "task": "translate"},
                                {"audio": wav(tmp_path / "a.wav", 1.0, 16000)})
    assert job["state"] == "succeeded", job["error"]
    details = job["outputs"]["details"]["value"]
    assert (details["language"], details["language_probability"]) == ("de", 1)
    assert details["task"] == "translate"


def test_srt_and_vtt_are_exact() -> None:
    segments = [(0.0, 1.5, " Hello there."), (1.5, 62.25, "General Kenobi!"),
                (3723.0004, 3725.9996, "An hour later.")]
    assert subtitles.srt(segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n00:00:01,500 --> 00:01:02,250\nGeneral Kenobi!\n\n"
        "3\n01:02:03,000 --> 01:02:06,000\nAn hour later.\n")
    assert subtitles.vtt(segments[:2]) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
        "00:00:01.500 --> 00:01:02.250\nGeneral Kenobi!\n")
    assert subtitles.srt([]) == "" and subtitles.vtt([]) == "WEBVTT\n"


def test_bad_audio_and_bad_settings_give_clear_errors(stablecore_client: Client,
                                                      tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(200)))
    job = stablecore_client.run("whisper.transcribe", FAST, {"audio": broken})
    assert job["state"] == "failed" and "cannot read" in job["error"] and \
        "as audio" in job["error"]
    speech = wav(tmp_path / "ok.wav", 0.5, 16000)
    job = stablecore_client.run("whisper.transcribe", {**FAST, "language": "xx"},
                                {"audio": speech})
    assert job["state"] == "failed" and "language 'xx' is not one this model knows" in \
        job["error"]
    job = stablecore_client.run("whisper.transcribe", {"model": "large-v3"},
                                {"audio": speech})
    assert job["state"] == "failed"
    assert "model large-v3 (Systran/faster-whisper-large-v3) is not downloaded" in job["error"]
