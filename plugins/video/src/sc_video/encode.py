"""Writing videos with PyAV: RGB frames in, one of a few codecs out, with an optional audio file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from sc_video.decode import open_media


@dataclass(frozen=True)
class Codec:
    encoder: str
    ext: str  # the container: mp4, webm, mkv or mov
    pix_fmt: str
    audio: str  # the audio encoder that container takes
    options: dict[str, str]  # `{crf}` is replaced by the quality param


CODECS = {
    "h264": Codec("libx264", "mp4", "yuv420p", "aac", {"crf": "{crf}", "preset": "medium"}),
    "hevc": Codec("libx265", "mp4", "yuv420p", "aac",
                  {"crf": "{crf}", "x265-params": "log-level=error"}),
    "vp9": Codec("libvpx-vp9", "webm", "yuv420p", "libopus", {"crf": "{crf}", "b": "0"}),
    "av1": Codec("libsvtav1", "webm", "yuv420p", "libopus", {"crf": "{crf}"}),
    "ffv1": Codec("ffv1", "mkv", "bgr0", "pcm_s16le", {}),  # lossless RGB
    "prores": Codec("prores_ks", "mov", "yuv422p10le", "pcm_s16le", {"profile": "3"}),
}

UNNAMED_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 6: "5.1", 8: "7.1"}


def check_size(codec: str, width: int, height: int) -> None:
    if CODECS[codec].pix_fmt.startswith(("yuv420", "yuv422")) and (width % 2 or height % 2):
        raise ValueError(f"{codec} needs an even frame width and height, got {width}x{height}: "
                         "resize the frames or use codec ffv1")


def write(dest: Path, frames: Iterable[np.ndarray], size: tuple[int, int], fps: float,
          codec: str, crf: int, audio: Path | None,
          progress: Callable[[int], None]) -> Path:
    """Encode RGB uint8 frames of one `size` into `dest` (its suffix is set from the codec)."""
    spec = CODECS[codec]
    check_size(codec, *size)
    dest = dest.with_suffix("." + spec.ext)
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(dest), "w") as out:
        video = out.add_stream(spec.encoder, rate=rate)
        video.width, video.height, video.pix_fmt = *size, spec.pix_fmt
        video.options = {k: v.format(crf=crf) for k, v in spec.options.items()}
        sound = _add_audio_stream(out, spec.audio, audio) if audio is not None else None
        count = 0
        for pixels in frames:
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts, frame.time_base = count, 1 / rate
            out.mux(video.encode(frame))
            count += 1
            progress(count)
        out.mux(video.encode())
        if sound is not None and audio is not None:
            _copy_audio(out, sound, audio, count / rate)
    return dest


def _add_audio_stream(out: av.container.OutputContainer, encoder: str,
                      audio: Path) -> av.audio.stream.AudioStream:
    with open_media(audio) as src:
        if not src.streams.audio:
            raise ValueError(f"{audio.name} has no audio stream")
        track = src.streams.audio[0]
        layout, channels, rate = track.layout.name, track.channels, track.rate
    if layout.endswith("channels"):  # no channel order (e.g. a plain wav): take the usual one
        layout = UNNAMED_LAYOUTS.get(channels, layout)
    stream = out.add_stream(encoder, rate=48000 if encoder == "libopus" else rate)
    stream.layout = layout
    return stream


def _copy_audio(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream,
                audio: Path, seconds: float) -> None:
    """Encode the audio file's first track, cut to the video's length."""
    with open_media(audio) as src:
        track = src.streams.audio[0]
        for frame in src.decode(track):
            if frame.pts is not None and float(frame.pts * track.time_base) >= seconds:
                break
            frame.pts = None
            out.mux(stream.encode(frame))
    out.mux(stream.encode())
