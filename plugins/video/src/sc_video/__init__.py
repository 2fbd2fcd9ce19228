"""Video: video -> frames (a frame sheet plus its layout and the audio) and frames -> video."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import PIL.Image

from sc_video import decode, encode, framesheet
from stablecore import Audio, Context, Field, Image, Numbers, Video, job

PREVIEW_EVERY = 25  # frames between progress previews


@dataclass
class Frames:
    sheet: Image  # every frame, row by row (see `layout`)
    layout: Numbers  # a row per frame: time, x, y, width, height; rate = frames per second
    audio: Audio | None  # the audio of the same time range (absent if the video has none)


def scratch(ctx: Context) -> Path:
    """An empty folder for this job's files. The worker has copied the previous job's outputs
    by the time the next job starts, so clearing it keeps files from piling up."""
    folder = ctx.tmpdir / "sc_video"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def check_range(start: float, end: float) -> None:
    if end and end <= start:
        raise ValueError(f"end ({end} s) must be after start ({start} s), or 0 for the end")


@job(description="Split a video into frames: a frame sheet image, its layout and the audio. "
                 "Feed them to video.from_frames to make a video again.")
def to_frames(
    ctx: Context,
    video: Video,
    fps: float = Field(0, ge=0, le=240, description="frames per second; 0 = every frame"),
    start: float = Field(0, ge=0, description="seconds from the start of the video"),
    end: float = Field(0, ge=0, description="seconds; 0 = to the end"),
    width: int = Field(0, ge=0, le=8192, description="frame width; 0 = the video's own"),
    columns: int = Field(0, ge=0, le=1000, description="frames per sheet row; 0 = square-ish"),
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
        if not images:
            framesheet.check_size(total, *image.size)
        images.append(image)
        times.append(t)
        show = len(images) % PREVIEW_EVERY == 1
        ctx.progress(len(images), max(total, len(images)), preview=image if show else None)
        if len(images) >= max_frames:
            break
    if not images:
        raise ValueError(f"no frames between {start} s and {end or length} s "
                         f"(the video lasts {length:.2f} s)")
    # 3. pack the sheet; cut the audio
    picture, layout = framesheet.pack(images, times, columns, out_fps)
    audio_end = min(end or 1e12, times[-1] + 1 / out_fps) if out_fps else end
    sound = (decode.audio_to_wav(video.path, scratch(ctx) / "audio.wav", start, audio_end)
             if audio else None)
    ctx.log.info("video.to_frames: %d frames of %dx%d at %.3f fps", len(images),
                 *images[0].size, out_fps)
    return Frames(picture, layout, Audio(sound) if sound else None)


@job(description="Make a video from a frame sheet (from video.to_frames, or any grid of "
                 "equal frames), with an optional audio track.")
def from_frames(
    ctx: Context,
    sheet: Image,
    layout: Numbers | None = None,
    audio: Audio | None = None,
    count: int = Field(0, ge=0, le=100_000,
                       description="frames in the sheet, row by row; 0 = from the layout"),
    columns: int = Field(0, ge=0, le=1000, description="frames per row (without a layout); "
                                                       "0 = square-ish"),
    fps: float = Field(0, ge=0, le=240, description="0 = the layout's rate, else 24"),
    codec: Literal["h264", "hevc", "vp9", "av1", "ffv1", "prores"] = Field(
        "h264", description="h264/hevc in .mp4, vp9/av1 in .webm, ffv1 (lossless) in .mkv, "
                            "prores in .mov"),
    crf: int = Field(18, ge=0, le=51, description="quality for h264/hevc/vp9/av1: "
                                                  "lower is better and bigger"),
) -> Video:
    # 1. find the frames and check them against the codec
    boxes = framesheet.rects(sheet, layout, count, columns)
    _, _, width, height = boxes[0]
    encode.check_size(codec, width, height)
    rate = fps or (layout.rate if layout is not None and layout.rate else 24.0)
    # 2. encode
    pixels = framesheet.unpack(sheet, boxes)
    dest = encode.write(scratch(ctx) / "video", pixels, (width, height), rate, codec, crf,
                        audio.path if audio else None,
                        lambda i: ctx.progress(i, len(boxes)))
    ctx.log.info("video.from_frames: %d frames of %dx%d at %.3f fps, %s", len(boxes), width,
                 height, rate, codec)
    return Video(dest)


@job(description="One frame of a video, at a time in seconds.")
def frame(video: Video, time: float = Field(0, ge=0, description="seconds")) -> Image:
    for _, found in decode.frames(video.path, 1.0, time, time + 0.5):
        return found.to_image()
    with decode.open_media(video.path) as container:
        length = decode.duration(container)
    raise ValueError(f"no frame at {time} s: the video lasts {length:.2f} s")
