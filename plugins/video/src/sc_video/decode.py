"""Reading videos with PyAV: frames at a frame rate within a time range, and the audio track."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

EPS = 1e-6  # seconds: a frame this close to a sample time counts as at it


def open_media(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except av.error.FFmpegError as e:
        raise ValueError(f"cannot read {path.name} as a video: {e}") from None


def duration(container: av.container.InputContainer) -> float:
    return container.duration / av.time_base if container.duration else 0.0


def frames(path: Path, fps: float, start: float,
           end: float) -> Iterator[tuple[float, av.VideoFrame]]:
    """(time, frame) pairs in [start, end) (end 0 = to the end). With fps 0 every decoded frame;
    else one per 1/fps step from `start`, each showing the latest frame at or before it."""
    with open_media(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        t0 = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        if start > 0:
            container.seek(int((start + t0) / stream.time_base), stream=stream)
        k, held, held_t = 0, None, 0.0
        for frame in container.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * stream.time_base) - t0
            if fps == 0:
                if t < start - EPS:
                    continue
                if end and t >= end - EPS:
                    return
                yield t, frame
                continue
            while held is not None and start + k / fps < t - EPS:
                if end and start + k / fps >= end - EPS:
                    return
                yield start + k / fps, held
                k += 1
            held, held_t = frame, t
        if fps and held is not None:  # the last frame lasts one source frame
            rate = float(stream.average_rate or stream.guessed_rate or fps)
            while start + k / fps < held_t + 1 / rate - EPS and (
                    not end or start + k / fps < end - EPS):
                yield start + k / fps, held
                k += 1


def audio_to_wav(path: Path, dest: Path, start: float, end: float) -> Path | None:
    """The first audio track between start and end as 16-bit wav, or None if there is none."""
    with open_media(path) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        t0 = float(stream.start_time * stream.time_base) if stream.start_time else 0.0
        if start > 0:
            container.seek(int((start + t0) / stream.time_base), stream=stream)
        channels, rate = stream.channels, stream.rate
        resampler = av.AudioResampler(format="s16", layout=stream.layout, rate=rate)
        chunks, first = [], None
        for frame in container.decode(stream):
            if first is None:
                first = float(frame.pts * stream.time_base) - t0 if frame.pts is not None else 0.0
            chunks += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(frame)]
            if end and float((frame.pts or 0) * stream.time_base) - t0 > end:
                break
        chunks += [f.to_ndarray().reshape(-1, channels) for f in resampler.resample(None)]
    if not chunks:
        return None
    samples = np.concatenate(chunks)
    skip = max(0, round((start - (first or 0.0)) * rate))
    stop = round((end - (first or 0.0)) * rate) if end else len(samples)
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.ascontiguousarray(samples[skip:stop]).tobytes())
    return dest
