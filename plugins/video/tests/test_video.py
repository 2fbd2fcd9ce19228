"""Video through a real server: to_frames -> from_frames keeps frame count, size, order, audio."""

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


def fetch_frames(client: Client, job: dict, folder: Path) -> list[np.ndarray]:
    assert job["state"] == "succeeded", job["error"]
    return [np.asarray(PIL.Image.open(client.download(ref["id"], folder / f"{i}.png")))
            for i, ref in enumerate(job["outputs"]["frames"])]


def bar(pixels: np.ndarray) -> int:
    """Where the white bar of a frame starts (see frame_pixels)."""
    return int(np.argmax(pixels[H // 2, :, 0] > 200))


def decoded(path: Path) -> tuple[list[np.ndarray], list[str], float]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        return frames, [s.type for s in c.streams], float(c.streams.video[0].average_rate)


def test_round_trip_keeps_frames_size_order_and_audio(stablecore_client: Client, clip: Path,
                                                      tmp_path: Path) -> None:
    parts = stablecore_client.run("video.to_frames", {}, {"video": clip})
    frames = fetch_frames(stablecore_client, parts, tmp_path)
    assert len(frames) == N and all(f.shape == (H, W, 3) for f in frames)
    assert [bar(f) for f in frames] == [4 * i for i in range(N)]
    times = json.loads(fetch(stablecore_client, parts, "times", tmp_path / "t.json").read_text())
    assert times["columns"] == ["time"] and times["rate"] == FPS
    assert [round(row[0], 4) for row in times["values"]] == [round(k / FPS, 4) for k in range(N)]
    with wave.open(str(fetch(stablecore_client, parts, "audio", tmp_path / "a.wav"))) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 44100
        assert abs(w.getnframes() / 44100 - N / FPS) < 0.05

    out = parts["outputs"]
    inputs = {"frames": [f["id"] for f in out["frames"]], "times": out["times"]["id"],
              "audio": out["audio"]["id"]}
    made = stablecore_client.run("video.from_frames", {"codec": "h264"}, inputs)
    frames, streams, rate = decoded(fetch(stablecore_client, made, "video", tmp_path / "v.mp4"))
    assert len(frames) == N and frames[0].shape == (H, W, 3)
    assert streams == ["video", "audio"] and rate == FPS
    assert [bar(f) for f in frames] == [4 * i for i in range(N)]


def test_lossless_codec_reproduces_the_frames_exactly(stablecore_client: Client, clip: Path,
                                                      tmp_path: Path) -> None:
    parts = stablecore_client.run("video.to_frames", {"audio": False}, {"video": clip})
    assert "audio" not in parts["outputs"]
    frames = fetch_frames(stablecore_client, parts, tmp_path)
    ids = [f["id"] for f in parts["outputs"]["frames"]][::-1]  # reversed: order is kept
    made = stablecore_client.run("video.from_frames", {"codec": "ffv1", "fps": 12},
                                 {"frames": ids})
    decoded_frames, streams, rate = decoded(fetch(stablecore_client, made, "video",
                                                  tmp_path / "v.mkv"))
    assert streams == ["video"] and rate == 12 and len(decoded_frames) == N
    assert all(np.array_equal(a, b) for a, b in zip(decoded_frames, frames[::-1], strict=True))


def test_fps_and_time_range_pick_the_right_frames(stablecore_client: Client, clip: Path,
                                                  tmp_path: Path) -> None:
    def picked(**params: object) -> tuple[list[float], list[int]]:
        job = stablecore_client.run("video.to_frames", {"audio": False, **params},
                                    {"video": clip})
        times = json.loads(fetch(stablecore_client, job, "times", tmp_path / "t.json")
                           .read_text())
        bars = [bar(f) for f in fetch_frames(stablecore_client, job, tmp_path)]
        return [round(row[0], 4) for row in times["values"]], bars

    assert picked(fps=12) == ([round(k / 12, 4) for k in range(6)], [8 * k for k in range(6)])
    assert picked(start=0.25, end=0.5) == ([round(k / 24, 4) for k in range(6, 12)],
                                           [4 * k for k in range(6, 12)])
    times, bars = picked(fps=48)
    assert len(times) == 2 * N and bars == [4 * (k // 2) for k in range(2 * N)]
    assert len(picked(max_frames=5)[0]) == 5

    one = stablecore_client.run("video.frame", {"time": 0.25}, {"video": clip})
    image = np.asarray(PIL.Image.open(fetch(stablecore_client, one, "image", tmp_path / "f.png")))
    assert image.shape == (H, W, 3) and bar(image) == 4 * 6


def test_bad_input_fails_with_a_clear_error(stablecore_client: Client, clip: Path,
                                            tmp_path: Path) -> None:
    sizes = {"a": (32, 24), "b": (32, 24), "c": (30, 24), "odd": (33, 25)}
    paths = {}
    for name, size in sizes.items():
        paths[name] = tmp_path / f"{name}.png"
        PIL.Image.new("RGB", size).save(paths[name])
    job = stablecore_client.run("video.from_frames", {}, {"frames": [paths["odd"]] * 2})
    assert job["state"] == "failed"
    assert "h264 needs an even frame width and height, got 33x25" in job["error"]

    frames = [paths["a"], paths["b"], paths["c"]]
    job = stablecore_client.run("video.from_frames", {"codec": "ffv1"}, {"frames": frames})
    assert job["state"] == "failed"
    assert "frame 2 is 30x24, frame 0 is 32x24" in job["error"], job["error"]

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    job = stablecore_client.run("video.to_frames", {}, {"video": broken})
    assert job["state"] == "failed" and "as a video" in job["error"], job["error"]

    job = stablecore_client.run("video.to_frames", {"start": 5}, {"video": clip})
    assert job["state"] == "failed" and "past the end of the video" in job["error"]


def test_a_workflow_maps_a_transform_over_the_frames_back_into_a_video(
        stablecore_client: Client, clip: Path, tmp_path: Path) -> None:
    """video.to_frames -> transform2d.transform per frame (map) -> video.from_frames, as one
    graph; each frame moves right by 4 px per second of its time (a numbers column per item)."""
    from stablecore.workflow import Workflow

    video = stablecore_client.upload(clip)
    wf = Workflow("mirror a clip")
    split = wf.add("video.to_frames", "split", inputs={"video": video["id"]})
    flip = wf.add("transform2d.transform", "flip", image=split.frames, flip="horizontal",
                  translate_x=split.column("times", "time"), map="image")
    wf.add("video.from_frames", "join", frames=flip.image, times=split.times, audio=split.audio,
           codec="ffv1")
    run = stablecore_client.run_workflow(wf)
    assert run["state"] == "succeeded", run
    assert len(run["nodes"]["flip"]["items"]) == N
    frames, streams, rate = decoded(fetch(stablecore_client, run["nodes"]["join"], "video",
                                          tmp_path / "mirrored.mkv"))
    assert len(frames) == N and streams == ["video", "audio"] and rate == FPS
    # mirrored: the 8 px bar that started at 4 i now ends at W - 4 i (plus a sub-pixel shift)
    assert all(abs(W - bar(f) - 8 - 4 * i) <= 1 for i, f in enumerate(frames))
    shifts = [stablecore_client.job(item["job_id"])["params"]["translate_x"]
              for item in run["nodes"]["flip"]["items"]]
    assert [round(x, 4) for x in shifts] == [round(i / FPS, 4) for i in range(N)]
