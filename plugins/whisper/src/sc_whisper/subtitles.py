"""Subtitles from timed segments: SubRip (.srt) and WebVTT (.vtt)."""

from __future__ import annotations

from collections.abc import Iterable

Segment = tuple[float, float, str]  # start and end in seconds, text


def timestamp(seconds: float, separator: str) -> str:
    """`HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT), rounded to the millisecond."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{ms:03d}"


def srt(segments: Iterable[Segment]) -> str:
    blocks = [f"{i}\n{timestamp(start, ',')} --> {timestamp(end, ',')}\n{text.strip()}\n"
              for i, (start, end, text) in enumerate(segments, 1)]
    return "\n".join(blocks)


def vtt(segments: Iterable[Segment]) -> str:
    blocks = [f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{text.strip()}\n"
              for start, end, text in segments]
    return "\n".join(["WEBVTT\n", *blocks])
