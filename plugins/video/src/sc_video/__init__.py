"""Video: video -> frames (a list of images, their times and the audio) and frames -> video."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import PIL.Image

from sc_video import decode, encode
from stablecore import Audio, Context, Field, Image, Numbers, Video, job

PREVIEW_EVERY = 25  # frames between progress previews


@dataclass
class Frames:
    frames: list[Image]  # in order, all of one size
    times: Numbers  # a row per frame: its time in seconds (column "time"); rate = frames/second
    audio: Audio | None  # the audio of the same time range (absent if the video has none)


def check_range(start: float, end: float) -> None:
    if end and end <= start:
        raise ValueError(f"end ({end} s) must be after start ({start} s), or 0 for the end")


def check_sizes(frames: list[PIL.Image.Image]) -> tuple[int, int]:
    """The one size all frames share; else name the first frame that differs."""
    if not frames:
        raise ValueError("no frames given")
    size = frames[0].size
    for i, image in enumerate(frames):
        if image.size != size:
            raise ValueError(f"all frames must have one size: frame {i} is "
                             f"{image.width}x{image.height}, frame 0 is {size[0]}x{size[1]}")
    return size


@job(description="Split a video into frames: a list of images, their times and the audio. "
                 "Feed them to video.from_frames to make a video again.")
def to_frames(
    ctx: Context,
    video: Video,
    fps: float = Field(0, ge=0, le=240, description="frames per second; 0 = every frame"),
    start: float = Field(0, ge=0, description="seconds from the start of the video"),
    end: float = Field(0, ge=0, description="seconds; 0 = to the end"),
    width: int = Field(0, ge=0, le=8192, description="frame width; 0 = the video's own"),
    max_frames: int = Field(1000, ge=1, le=100_000, description="stop after this many"),
    audio: bool = Field(True, description="also extract the audio of the range"),
) -> Frames:
    # 1. check the range against the video
    check_range(start, end)
    with decode.open_media(video.path) as container:
        length = decode.duration(container)
        rate = container.streams.video[0].average_rate if container.streams.video else None
    if length and start >= length:
        raise ValueError(f"start ({start} s) is past the end of the video ({length:.2f} s)")
    out_fps = fps or float(rate or 0)
    total = min(max_frames, max(1, round(((end or length) - start) * out_fps)))
    # 2. decode, resize and collect the frames
    images, times = [], []
    for t, frame in decode.frames(video.path, fps, start, end):
        image = frame.to_image()
        if width:
            height = max(1, round(image.height * width / image.width))
            image = image.resize((width, height), PIL.Image.Resampling.LANCZOS)
        images.append(image)
        times.append(t)
        show = len(images) % PREVIEW_EVERY == 1
        ctx.progress(len(images), max(total, len(images)), preview=image if show else None)
        if len(images) >= max_frames:
            break
    if not images:
        raise ValueError(f"no frames between {start} s and {end or length} s "
                         f"(the video lasts {length:.2f} s)")
    # 3. cut the audio of the same range
    audio_end = min(end or 1e12, times[-1] + 1 / out_fps) if out_fps else end
    sound = (decode.audio_to_wav(video.path, ctx.tmpdir / "audio.wav", start, audio_end)
             if audio else None)
    ctx.log.info("video.to_frames: %d frames of %dx%d at %.3f fps", len(images),
                 *images[0].size, out_fps)
    return Frames(images, Numbers(np.array(times)[:, None], ["time"], out_fps or None),
                  Audio(sound) if sound else None)


@job(description="Make a video from a list of frames of one size (from video.to_frames or "
                 "any images), with an optional audio track.")
def from_frames(
    ctx: Context,
    frames: list[Image],
    audio: Audio | None = None,
    times: Numbers | None = None,
    fps: float = Field(0, ge=0, le=240, description="0 = the rate of `times` if given, else 24"),
    codec: Literal["h264", "hevc", "vp9", "av1", "ffv1", "prores"] = Field(
        "h264", description="h264/hevc in .mp4, vp9/av1 in .webm, ffv1 (lossless) in .mkv, "
                            "prores in .mov"),
    crf: int = Field(18, ge=0, le=51, description="quality for h264/hevc/vp9/av1: "
                                                  "lower is better and bigger"),
) -> Video:
    # 1. check the frames against each other and the codec
    width, height = check_sizes(frames)
    encode.check_size(codec, width, height)
    rate = fps or (times.rate if times is not None and times.rate else 24.0)
    # 2. encode, one frame at a time
    def progress(i: int) -> None:
        show = i % PREVIEW_EVERY == 1
        ctx.progress(i, len(frames), preview=frames[i - 1] if show else None)

    pixels = (np.asarray(image.convert("RGB")) for image in frames)
    dest = encode.write(ctx.tmpdir / "video", pixels, (width, height), rate, codec, crf,
                        audio.path if audio else None, progress)
    ctx.log.info("video.from_frames: %d frames of %dx%d at %.3f fps, %s", len(frames), width,
                 height, rate, codec)
    return Video(dest)


@job(description="One frame of a video, at a time in seconds.")
def frame(video: Video, time: float = Field(0, ge=0, description="seconds")) -> Image:
    for _, found in decode.frames(video.path, 1.0, time, time + 0.5):
        return found.to_image()
    with decode.open_media(video.path) as container:
        length = decode.duration(container)
    raise ValueError(f"no frame at {time} s: the video lasts {length:.2f} s")
