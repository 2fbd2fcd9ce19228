"""Video through a real server: to_frames -> from_frames keeps frame count, size and audio."""

from __future__ import annotations

import json
import wave
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import PIL.Image
import pytest

from stablecore.client import Client

W, H, N, FPS = 64, 48, 12, 24


def frame_pixels(i: int) -> np.ndarray:
    """Frame i: a white bar at x = 4 i on a grey level that changes per frame."""
    pixels = np.full((H, W, 3), 10 * i, np.uint8)
    pixels[:, 4 * i:4 * i + 8] = 255
    return pixels


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of 64x48 at 24 fps (h264) with a 440 Hz stereo tone (aac)."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        video.options = {"crf": "10"}
        audio = out.add_stream("aac", rate=44100)
        audio.layout = "stereo"
        for i in range(N):
            frame = av.VideoFrame.from_ndarray(frame_pixels(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        t = np.arange(44100 * N // FPS) / 44100
        tone = np.sin(2 * np.pi * 440 * t).astype(np.float32) * 0.3
        sound = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
        sound.sample_rate = 44100
        out.mux(audio.encode(sound))
        out.mux(audio.encode())
    return path


def fetch(client: Client, job: dict, name: str, dest: Path) -> Path:
    assert job["state"] == "succeeded", job["error"]
    return client.download(job["outputs"][name]["id"], dest)


def decoded(path: Path) -> tuple[list[np.ndarray], list[str], float]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        return frames, [s.type for s in c.streams], float(c.streams.video[0].average_rate)


def test_round_trip_keeps_frames_size_and_audio(stablecore_client: Client, clip: Path,
                                                tmp_path: Path) -> None:
    parts = stablecore_client.run("video.to_frames", {"columns": 5}, {"video": clip})
    sheet = PIL.Image.open(fetch(stablecore_client, parts, "sheet", tmp_path / "sheet.png"))
    layout = json.loads(fetch(stablecore_client, parts, "layout", tmp_path / "l.json").read_text())
    assert sheet.size == (5 * W, 3 * H)
    assert len(layout["values"]) == N and layout["rate"] == FPS
    assert [row[1:] for row in layout["values"][:6]] == [
        [0, 0, W, H], [W, 0, W, H], [2 * W, 0, W, H], [3 * W, 0, W, H], [4 * W, 0, W, H],
        [0, H, W, H]]
    with wave.open(str(fetch(stablecore_client, parts, "audio", tmp_path / "a.wav"))) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 44100
        assert abs(w.getnframes() / 44100 - N / FPS) < 0.05

    ids = {k: parts["outputs"][k]["id"] for k in ("sheet", "layout", "audio")}
    made = stablecore_client.run("video.from_frames", {"codec": "h264"}, ids)
    frames, streams, rate = decoded(fetch(stablecore_client, made, "video", tmp_path / "v.mp4"))
    assert len(frames) == N and frames[0].shape == (H, W, 3)
    assert streams == ["video", "audio"] and rate == FPS
    bars = [int(np.argmax(f[H // 2, :, 0] > 200)) for f in frames]
    assert bars == [4 * i for i in range(N)]


def test_lossless_codec_reproduces_the_sheet_exactly(stablecore_client: Client, clip: Path,
                                                     tmp_path: Path) -> None:
    parts = stablecore_client.run("video.to_frames", {"audio": False}, {"video": clip})
    assert "audio" not in parts["outputs"]
    sheet = np.asarray(PIL.Image.open(fetch(stablecore_client, parts, "sheet",
                                            tmp_path / "s.png")).convert("RGB"))
    cells = [sheet[r * H:(r + 1) * H, c * W:(c + 1) * W] for r in range(3) for c in range(4)]
    made = stablecore_client.run("video.from_frames", {"codec": "ffv1", "count": N, "fps": 12},
                                 {"sheet": parts["outputs"]["sheet"]["id"]})
    frames, streams, rate = decoded(fetch(stablecore_client, made, "video", tmp_path / "v.mkv"))
    assert streams == ["video"] and rate == 12
    assert len(frames) == N and all(np.array_equal(a, b) for a, b in zip(frames, cells,
                                                                        strict=True))


def test_fps_and_time_range_pick_the_right_frames(stablecore_client: Client, clip: Path,
                                                  tmp_path: Path) -> None:
    def times(**params: object) -> list[float]:
        job = stablecore_client.run("video.to_frames", params, {"video": clip})
        layout = json.loads(fetch(stablecore_client, job, "layout", tmp_path / "l.json")
                            .read_text())
        return [round(row[0], 4) for row in layout["values"]]

    assert times(fps=12) == [round(k / 12, 4) for k in range(6)]
    assert times(start=0.25, end=0.5) == [round(k / 24, 4) for k in range(6, 12)]
    assert len(times(fps=48)) == 2 * N
    assert len(times(max_frames=5)) == 5

    one = stablecore_client.run("video.frame", {"time": 0.25}, {"video": clip})
    image = np.asarray(PIL.Image.open(fetch(stablecore_client, one, "image", tmp_path / "f.png")))
    assert image.shape == (H, W, 3)
    assert int(np.argmax(image[H // 2, :, 0] > 200)) == 4 * 6


def test_bad_input_fails_with_a_clear_error(stablecore_client: Client, clip: Path,
                                            tmp_path: Path) -> None:
    odd = tmp_path / "odd.png"
    PIL.Image.new("RGB", (3 * 33, 2 * 25)).save(odd)
    job = stablecore_client.run("video.from_frames", {"count": 6, "columns": 3}, {"sheet": odd})
    assert job["state"] == "failed"
    assert "h264 needs an even frame width and height, got 33x25" in job["error"]

    job = stablecore_client.run("video.from_frames", {"count": 4, "columns": 4}, {"sheet": odd})
    assert job["state"] == "failed" and "does not split into 4 columns x 1 rows" in job["error"]

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    job = stablecore_client.run("video.to_frames", {}, {"video": broken})
    assert job["state"] == "failed" and "as a video" in job["error"], job["error"]

    job = stablecore_client.run("video.to_frames", {"start": 5}, {"video": clip})
    assert job["state"] == "failed" and "past the end of the video" in job["error"]
