"""audio: per-frame features of a sound file for audio-reactive animation (audio2num).

`audio.features` reads wav, flac, ogg or mp3 and returns one row per video frame (RMS, energy
in frequency bands, onset strength, beat pulses, spectral centroid) as `Numbers` with
`rate` = fps, the beat times, and a plot of the curves. The maths lives in `sc_audio.ops`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sc_audio import ops
from stablecore import Audio, Context, Field, Image, Numbers, job

__all__ = ["AudioFeatures", "features"]

Feature = Literal["rms", "bands", "onset", "beat", "centroid"]


@dataclass
class AudioFeatures:
    features: Numbers  # frames x columns, rate = fps, columns named
    beats: Numbers     # one row per beat: time (s)
    plot: Image        # every column over time


@job(description="Per-frame audio features for audio-reactive animation: RMS, energy in "
                 "frequency bands, onset strength, beat pulses and times, spectral centroid; "
                 "plus a plot of the curves. Reads wav, flac, ogg and mp3.")
def features(
    ctx: Context,
    audio: Audio = Field(description="the sound file (wav, flac, ogg or mp3)"),
    fps: float = Field(24.0, gt=0, le=240, description="rows per second: the frame rate of "
                       "the animation the features drive"),
    bands: list[tuple[float, float]] = Field(
        [(20.0, 250.0), (250.0, 2000.0), (2000.0, 8000.0)], min_length=1, max_length=32,
        description="frequency bands [low, high) in Hz; each gives a column band_<low>_<high> "
                    "with the mean-square amplitude in the band"),
    include: list[Feature] = Field(
        ["rms", "bands", "onset", "beat", "centroid"], min_length=1,
        description="which features to compute, as columns in this order: rms, bands, "
                    "onset, beat, centroid"),
    normalize: Literal["none", "peak", "minmax"] = Field(
        "none", description="scale each column (except beat): none, peak (max = 1) or "
                            "minmax (0..1)"),
    sample_rate: int = Field(22050, ge=0, le=192000, description="resample to this rate "
                             "before analysis (0 = the file's own rate); bands above half of "
                             "it are cut"),
    start: float = Field(0.0, ge=0, description="start of the analysed range, in seconds"),
    duration: float = Field(0.0, ge=0, description="length of the analysed range, in "
                            "seconds (0 = to the end)"),
    tempo_hint: float = Field(120.0, ge=30, le=300, description="expected tempo in BPM; "
                              "the beat tracker prefers tempi near it"),
    pulse_decay: float = Field(0.0, ge=0, le=10, description="seconds over which a beat "
                               "pulse decays (0 = a single frame at 1.0)"),
    plot_width: int = Field(1200, ge=200, le=8192, description="plot width in pixels"),
    plot_height: int = Field(800, ge=150, le=8192, description="plot height in pixels"),
) -> AudioFeatures:
    y, sr = ops.load(audio.path, sample_rate, start, duration)
    analysis = ops.analyze(y, sr, fps, bands, include, normalize, tempo_hint, pulse_decay,
                           progress=ctx.progress)
    for note in analysis.notes:
        ctx.log.warning(note)
    title = f"{analysis.duration:.1f} s at {fps:g} fps"
    if "beat" in include:
        title += f", {len(analysis.beats)} beats, tempo {analysis.tempo:.1f} BPM"
        ctx.log.info(title)
    image = ops.plot(analysis, plot_width, plot_height, title)
    return AudioFeatures(Numbers(analysis.values, analysis.columns, fps),
                         Numbers(analysis.beats.reshape(-1, 1), ["time"]), image)
