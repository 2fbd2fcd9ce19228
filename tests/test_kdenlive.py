"""kdenlive clip jobs on the real path: `stable-core bridges kdenlive install` writes the
entries, the command line kdenlive builds from them runs on a generated clip through a real
server, and an MLT project that uses the result renders with `melt`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stablecore.cli.kdenlive import KConfigFile, job_id
from stablecore.testing import ServerProcess

av = pytest.importorskip("av")  # the video plugin's dependency: generates and reads clips

FRAMES, FPS, W, H = 12, 12, 32, 24
LEFT, RIGHT = (200, 40, 40), (20, 20, 220)
FOREIGN = "{00000000-1111-2222-3333-444444444444}"  # a clip job of the user's own
PROJECT = """<?xml version="1.0" encoding="utf-8"?>
<mlt LC_NUMERIC="C" producer="main">
  <profile description="test" width="{w}" height="{h}" progressive="1" sample_aspect_num="1"
           sample_aspect_den="1" display_aspect_num="{w}" display_aspect_den="{h}"
           frame_rate_num="{fps}" frame_rate_den="1" colorspace="709"/>
  <producer id="clip"><property name="resource">{clip}</property></producer>
  <playlist id="track0"><entry producer="clip" in="0" out="{last}"/></playlist>
  <tractor id="main"><track producer="track0"/></tractor>
</mlt>
"""


@pytest.fixture(scope="module")
def server(stablecore_server: ServerProcess) -> ServerProcess:
    return stablecore_server


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s, 12 fps, 32x24 h264 clip, left half red, right half blue, with a 440 Hz tone."""
    path = tmp_path_factory.mktemp("kdenlive") / "my clip.mp4"  # kdenlive keeps spaces whole
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        sound = out.add_stream("aac", rate=16000)
        sound.layout = "mono"
        pixels = np.zeros((H, W, 3), np.uint8)
        pixels[:, : W // 2], pixels[:, W // 2:] = LEFT, RIGHT
        for _ in range(FRAMES):
            out.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(video.encode())
        tone = (np.sin(2 * np.pi * 440 * np.arange(16000) / 16000) * 0.3).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(tone[None], format="fltp", layout="mono")
        frame.sample_rate = 16000
        out.mux(sound.encode(frame))
        out.mux(sound.encode())
    return path


def read(path: Path) -> tuple[list[np.ndarray], float, float]:
    """Frames (RGB), frame rate, and the RMS of the first audio stream (0 if none)."""
    with av.open(str(path)) as media:
        rate = float(media.streams.video[0].average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in media.decode(video=0)]
    with av.open(str(path)) as media:
        samples = [f.to_ndarray().astype(np.float64).ravel() for f in media.decode(audio=0)]
    level = float(np.sqrt(np.mean(np.concatenate(samples) ** 2))) if samples else 0.0
    return frames, rate, level


def stable_core(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stablecore", *args], capture_output=True,
                          text=True, timeout=120)


def as_kdenlive_runs(rc: Path, job: str, source: Path, output: Path,
                     *answers: str) -> tuple[subprocess.CompletedProcess[str], list[int]]:
    """Run an installed clip job the way kdenlive's CustomJobTask does: the Binary with the
    Parameters split on spaces, {source}/{output}/{paramN} replaced, progress read from the
    `percentage:` lines on stderr."""
    config, key = KConfigFile(rc), job_id(job)
    binary = config.groups["Binary"][key]
    assert Path(binary).is_file()
    args = [a.replace("{source}", str(source)).replace("{output}", str(output))
            for a in config.groups["Parameters"][key].split(" ") if a]
    for n, answer in enumerate(answers, start=1):
        args = [a.replace(f"{{param{n}}}", answer) for a in args]
    done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120)
    shown = [int(line.split("percentage:")[1]) for line in done.stderr.splitlines()
             if "percentage:" in line]
    return done, shown


def test_clip_jobs_installed_run_and_play_in_melt(server: ServerProcess, clip: Path,
                                                  tmp_path: Path) -> None:
    # 1. install two clip jobs beside one of the user's own, which must stay untouched
    rc = tmp_path / "kdenlive" / "clipjobsettings.rc"
    rc.parent.mkdir()
    rc.write_text(f"[Ids]\n{FOREIGN}=My Clip Job\n\n[Binary]\n{FOREIGN}=/usr/bin/ffmpeg\n\n"
                  f"[Parameters]\n{FOREIGN}=-i {{source}} -codec:v copy {{output}}\n")
    done = stable_core("bridges", "kdenlive", "install", "testing.invert",
                       "transform2d.transform", "--ask", "flip", "--param", "border=wrap",
                       "--url", server.url, "--config", str(rc))
    assert done.returncode == 0, done.stderr
    config = KConfigFile(rc)
    key = job_id("transform2d.transform")
    assert config.groups["Ids"][key] == "stable-core: transform2d.transform"
    assert config.groups["Param1Type"][key] == "list"
    assert config.groups["Param1List"][key] == "none  horizontal  vertical  both"
    assert config.groups["Output"][key] == ".mp4"
    assert config.groups["EnabledTypes"][key] == "v"
    assert config.groups["Binary"][FOREIGN] == "/usr/bin/ffmpeg"

    # 2. kdenlive runs the invert job on the clip: a video with its frame rate and audio
    output = tmp_path / "my clip-inverted.mp4"
    done, shown = as_kdenlive_runs(rc, "testing.invert", clip, output)
    assert done.returncode == 0, done.stderr
    assert shown == sorted(shown) and shown[-1] == 100 and len(shown) > 5
    frames, rate, level = read(output)
    assert (len(frames), rate, frames[0].shape) == (FRAMES, FPS, (H, W, 3))
    assert level > 0.05  # the 440 Hz tone came through
    assert np.abs(frames[6][12, 4].astype(int) - [255 - c for c in LEFT]).max() < 12
    assert np.abs(frames[6][12, 28].astype(int) - [255 - c for c in RIGHT]).max() < 12

    # 3. and the transform job with the choice kdenlive asked for: flipped left to right
    flipped = tmp_path / "flipped.mp4"
    done, _ = as_kdenlive_runs(rc, "transform2d.transform", clip, flipped, "horizontal")
    assert done.returncode == 0, done.stderr
    frames, _, _ = read(flipped)
    assert np.abs(frames[0][12, 4].astype(int) - RIGHT).max() < 12

    # 4. an MLT project (what kdenlive saves) that uses the result renders with melt
    melt = shutil.which("melt")
    if melt is None:
        pytest.fail("melt is not installed (Debian package `melt`, in .ci/apt-packages.txt)")
    project = tmp_path / "project.mlt"
    project.write_text(PROJECT.format(w=W, h=H, fps=FPS, clip=output, last=FRAMES - 1))
    render = tmp_path / "render.mkv"
    done = subprocess.run([melt, "-quiet", str(project), "-consumer", f"avformat:{render}",
                           "vcodec=ffv1", "acodec=pcm_s16le", "real_time=-1"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    frames, rate, level = read(render)
    assert (len(frames), rate) == (FRAMES, FPS) and level > 0.05
    assert np.abs(frames[3][12, 4].astype(int) - [255 - c for c in LEFT]).max() < 16

    # 5. uninstall one, then all of ours; the user's own job stays
    assert stable_core("bridges", "kdenlive", "uninstall", "testing.invert",
                       "--config", str(rc)).returncode == 0
    assert job_id("testing.invert") not in KConfigFile(rc).groups["Parameters"]
    assert key in KConfigFile(rc).groups["Parameters"]
    assert stable_core("bridges", "kdenlive", "uninstall", "--config", str(rc)).returncode == 0
    assert list(KConfigFile(rc).groups["Parameters"]) == [FOREIGN]


def test_clipjob_errors_name_the_problem(server: ServerProcess, clip: Path,
                                         tmp_path: Path) -> None:
    out = str(tmp_path / "out.mp4")
    done = stable_core("clipjob", "testing.echo", "--source", str(clip), "--output", out,
                       "--url", server.url)
    assert done.returncode == 1 and "testing.echo has no image input" in done.stderr
    done = stable_core("clipjob", "transform2d.transform", "border=nope", "--source",
                       str(clip), "--output", out, "--url", server.url)
    assert done.returncode == 1 and "params.border" in done.stderr, done.stderr
    done = stable_core("clipjob", "testing.invert", "--source", str(clip), "--output",
                       str(tmp_path / "out.gif"), "--url", server.url)
    assert done.returncode == 1 and "must end in .mp4" in done.stderr
