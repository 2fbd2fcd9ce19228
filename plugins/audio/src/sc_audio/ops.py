"""Audio features per video frame, for audio-reactive animation, on numpy arrays.

Frame i covers the time [i / fps, (i + 1) / fps). Each feature is computed on a fine STFT
grid and then reduced to frames: RMS exactly from the samples of the frame, band energy and
spectral centroid as the mean over the frame, onset strength as the maximum. Beats come from
librosa's dynamic-programming beat tracker on the onset envelope.

librosa is imported inside the functions: it takes seconds to import, and a worker imports
every plugin when it starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = ("rms", "bands", "onset", "beat", "centroid")
N_FFT = 2048
CHUNK_FRAMES = 4096  # STFT frames per chunk: bounds memory for long files
Progress = Callable[[int, int], None] | None


@dataclass
class Analysis:
    values: np.ndarray                  # frames x columns
    columns: list[str]
    fps: float
    beats: np.ndarray                   # beat times in seconds
    tempo: float                        # beats per minute (0 if no beats were found)
    duration: float                     # seconds analysed
    sample_rate: int
    notes: list[str] = field(default_factory=list)


def load(path: Path, sample_rate: int = 22050, start: float = 0.0,
         duration: float = 0.0) -> tuple[np.ndarray, int]:
    """Mono float32 samples of an audio file (wav, flac, ogg, mp3, ...) and their rate.
    `sample_rate` 0 keeps the file's rate; `duration` 0 reads to the end."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        first = round(start * info.samplerate)
        if first >= info.frames > 0:
            raise ValueError(f"start {start:g} s is past the end of the audio "
                             f"({info.frames / info.samplerate:.2f} s)")
        stop = first + round(duration * info.samplerate) if duration > 0 else None
        data, rate = sf.read(str(path), start=first, stop=stop, dtype="float32",
                             always_2d=True)
        y = data.mean(axis=1)
    except (sf.LibsndfileError, RuntimeError, TypeError) as e:
        # libsndfile reads wav, flac, ogg/vorbis/opus and (from 1.1) mp3; anything else goes
        # through audioread, which needs ffmpeg or GStreamer on the machine
        try:
            import librosa

            y, rate = librosa.load(str(path), sr=None, mono=True, offset=start,
                                   duration=duration or None)
        except Exception as e2:
            raise ValueError(f"cannot decode the audio file: libsndfile {sf.__libsndfile_version__}"
                             f" says {e}; audioread says {type(e2).__name__}: {e2} (installing "
                             "ffmpeg lets audioread read more formats)") from None
    if y.size == 0:
        raise ValueError("the audio holds no samples in the requested range")
    if not np.isfinite(y).all():
        raise ValueError("the audio holds NaN or infinite samples")
    if sample_rate and rate != sample_rate:
        import librosa

        y = librosa.resample(y, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
        rate = sample_rate
    return np.ascontiguousarray(y, dtype=np.float32), int(rate)


def _reduce(per_hop: np.ndarray, hop: int, sr: int, fps: float, n: int, how: str) -> np.ndarray:
    """Per-STFT-frame values (frame k centred at sample k * hop) reduced to n video frames:
    the mean or max over the STFT frames whose centres fall in each video frame. A video frame
    with none (fps above the STFT rate) takes the value interpolated at its middle."""
    m = len(per_hop)
    edges = np.ceil(np.arange(n + 1) * (sr / (fps * hop)) - 1e-9).astype(np.int64)
    edges = np.clip(edges, 0, m)
    edges[-1] = m  # the last video frame takes what is left (the tail of the padded STFT)
    counts = np.diff(edges)
    full = counts > 0
    values = per_hop.astype(np.float64)
    if how == "max":
        pad = np.full((1, *values.shape[1:]), -np.inf)
        out = np.maximum.reduceat(np.concatenate([values, pad]), edges[:-1], axis=0)
    else:
        zero = np.zeros((1, *values.shape[1:]))
        csum = np.concatenate([zero, np.cumsum(values, axis=0)])
        shape = (-1,) + (1,) * (values.ndim - 1)
        out = (csum[edges[1:]] - csum[edges[:-1]]) / np.maximum(counts, 1).reshape(shape)
    if not full.all():
        mid = (np.flatnonzero(~full) + 0.5) * (sr / (fps * hop))
        grid = np.arange(m)
        cols = values.reshape(m, -1)
        filled = np.stack([np.interp(mid, grid, c) for c in cols.T], axis=1)
        out[~full] = filled.reshape((-1, *values.shape[1:]))
    return out


def track_beats(onset_env: np.ndarray, sr: int, hop: int, tempo_hint: float,
                ) -> tuple[np.ndarray, float]:
    """(beat times in seconds, tempo in BPM) from an onset envelope at `hop`.

    librosa's tracker is tuned for a hop near 512 samples and its tempogram costs grow with
    the square of the frame rate, so the envelope is max-pooled to about that hop first; each
    beat is then moved to the strongest onset of the fine envelope within one coarse frame."""
    import librosa

    q = max(1, round(512 / hop))
    usable = len(onset_env) // q * q
    coarse = onset_env[:usable].reshape(-1, q).max(axis=1) if q > 1 else onset_env
    if len(coarse) < 2:
        return np.zeros(0), 0.0
    # librosa's own trimming misjudges a pooled envelope; trim below instead
    tempo_arr, frames = librosa.beat.beat_track(onset_envelope=coarse, sr=sr,
                                                hop_length=hop * q, start_bpm=tempo_hint,
                                                trim=False)
    frames = np.asarray(frames, dtype=np.int64)
    if len(frames) == 0:
        return np.zeros(0), 0.0
    fine = []
    for f in frames:  # refine within [f - 1, f + 2) coarse frames of the fine envelope
        lo, hi = max(0, (f - 1) * q), min(len(onset_env), (f + 2) * q)
        fine.append(lo + int(np.argmax(onset_env[lo:hi])))
    idx = np.unique(np.asarray(fine))
    # drop leading and trailing beats without an onset (the tracker keeps its pace through
    # silence at the ends)
    strength = onset_env[idx]
    strong = np.flatnonzero(strength >= 0.1 * np.median(strength))
    if len(strong) == 0:
        return np.zeros(0), 0.0
    idx = idx[strong[0]:strong[-1] + 1]
    return idx * hop / sr, float(np.atleast_1d(tempo_arr)[0])


def band_name(lo: float, hi: float) -> str:
    return f"band_{lo:g}_{hi:g}"


def analyze(y: np.ndarray, sr: int, fps: float = 24.0,
            bands: Sequence[tuple[float, float]] = ((20, 250), (250, 2000), (2000, 8000)),
            features: Sequence[str] = FEATURES, normalize: str = "none",
            tempo_hint: float = 120.0, pulse_decay: float = 0.0,
            progress: Progress = None) -> Analysis:
    """Per-frame features of mono samples `y` at rate `sr`, `fps` rows per second.

    Columns, in this order when asked for: rms (root mean square of the samples), one
    band_<lo>_<hi> per band (the mean-square amplitude of the signal between lo and hi Hz:
    a sine of amplitude A gives A^2/2 in its band), onset (librosa onset strength, the
    frame's maximum), beat (1 on the frame holding a beat, decaying over `pulse_decay`
    seconds if that is above 0), centroid (spectral centroid in Hz, 0 when silent).
    `normalize`: none, peak (divide each column by its maximum) or minmax (to 0..1).
    """
    import librosa

    if y.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {y.shape}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    unknown = [f for f in features if f not in FEATURES]
    if unknown or not features:
        raise ValueError(f"features must be a non-empty list of {FEATURES}; unknown: {unknown}")
    if normalize not in ("none", "peak", "minmax"):
        raise ValueError(f"normalize must be none, peak or minmax, not {normalize!r}")
    nyquist = sr / 2
    notes: list[str] = []
    checked: list[tuple[float, float]] = []
    for lo, hi in bands if "bands" in features else ():
        if not 0 <= lo < hi:
            raise ValueError(f"band {lo:g}-{hi:g} Hz: it needs 0 <= low < high")
        if lo >= nyquist:
            raise ValueError(f"band {lo:g}-{hi:g} Hz lies above {nyquist:g} Hz, the highest "
                             f"frequency at the {sr} Hz analysis rate; raise sample_rate")
        if hi > nyquist:
            notes.append(f"band {lo:g}-{hi:g} Hz is cut at {nyquist:g} Hz (sample rate {sr})")
        checked.append((float(lo), float(hi)))
    if "bands" in features and not checked:
        raise ValueError("features include bands but no bands were given")
    wanted = [f for f in FEATURES if f in features]
    duration = len(y) / sr
    n = max(1, int(np.ceil(duration * fps - 1e-9)))
    hop = int(np.clip(round(sr / fps / 4), 32, 512))
    need_stft = bool({"bands", "onset", "beat", "centroid"} & set(wanted))
    m = 1 + len(y) // hop
    chunks = range(0, m, CHUNK_FRAMES) if need_stft else range(0)
    total = len(chunks) + 2
    step = 0

    def tick() -> None:
        nonlocal step
        step += 1
        if progress is not None:
            progress(step, total)

    band_power = np.zeros((m, len(checked)))
    centroid = np.zeros(m)
    mels: list[np.ndarray] = []
    freqs = librosa.fft_frequencies(sr=sr, n_fft=N_FFT)
    window = np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as librosa's default window
    norm = 2.0 / (N_FFT * float((window ** 2).sum()))  # Parseval, one-sided spectrum
    masks = []
    for lo, hi in checked:
        mask = (freqs >= lo) & (freqs < hi)
        if not mask.any():  # narrower than a bin: take the nearest bin
            mask[np.argmin(np.abs(freqs - (lo + hi) / 2))] = True
        masks.append(mask)
    y_pad = np.pad(y, N_FFT // 2)  # frame k is centred on sample k * hop (librosa's center)
    for k0 in chunks:
        k1 = min(m, k0 + CHUNK_FRAMES)
        seg = y_pad[k0 * hop:(k1 - 1) * hop + N_FFT]
        power = np.abs(librosa.stft(seg, n_fft=N_FFT, hop_length=hop, center=False)) ** 2
        for j, mask in enumerate(masks):
            band_power[k0:k1, j] = norm * power[mask].sum(axis=0)
        if "centroid" in wanted:
            mag = np.sqrt(power)
            weight = mag.sum(axis=0)
            centroid[k0:k1] = np.where(weight > 1e-10,
                                       (freqs[:, None] * mag).sum(axis=0) / np.maximum(weight,
                                                                                        1e-10),
                                       0.0)
        if "onset" in wanted or "beat" in wanted:
            mels.append(librosa.feature.melspectrogram(S=power, sr=sr, n_fft=N_FFT))
        tick()

    columns: list[str] = []
    data: list[np.ndarray] = []
    beats = np.zeros(0)
    tempo = 0.0
    if "rms" in wanted:
        c = np.concatenate([[0.0], np.cumsum(y.astype(np.float64) ** 2)])
        b = np.minimum(np.round(np.arange(n + 1) * (sr / fps)).astype(np.int64), len(y))
        count = np.maximum(np.diff(b), 1)
        columns.append("rms")
        data.append(np.sqrt(np.maximum(c[b[1:]] - c[b[:-1]], 0) / count))
    if "bands" in wanted:
        reduced = _reduce(band_power, hop, sr, fps, n, "mean")
        for j, (lo, hi) in enumerate(checked):
            columns.append(band_name(lo, hi))
            data.append(reduced[:, j])
    onset_env = None
    if mels:
        mel_db = librosa.power_to_db(np.concatenate(mels, axis=1), ref=np.max)
        onset_env = librosa.onset.onset_strength(S=mel_db, sr=sr, hop_length=hop, n_fft=N_FFT)
        if "onset" in wanted:
            columns.append("onset")
            data.append(_reduce(onset_env, hop, sr, fps, n, "max"))
    tick()
    if "beat" in wanted and onset_env is not None:
        beats, tempo = track_beats(onset_env, sr, hop, tempo_hint)
        pulse = np.zeros(n)
        frames = np.clip(np.floor(np.asarray(beats) * fps + 1e-9).astype(np.int64), 0, n - 1)
        pulse[frames] = 1.0
        if pulse_decay > 0:
            factor = float(np.exp(-1.0 / (pulse_decay * fps)))
            for i in range(1, n):
                pulse[i] = max(pulse[i], pulse[i - 1] * factor)
        columns.append("beat")
        data.append(pulse)
    if "centroid" in wanted:
        columns.append("centroid")
        data.append(_reduce(centroid, hop, sr, fps, n, "mean"))
    values = np.column_stack(data)
    if normalize != "none":
        for j, name in enumerate(columns):
            if name == "beat":
                continue
            col = values[:, j]
            lo = col.min() if normalize == "minmax" else 0.0
            span = col.max() - lo
            values[:, j] = (col - lo) / span if span > 0 else 0.0
    tick()
    return Analysis(values, columns, fps, np.asarray(beats, dtype=np.float64), tempo, duration,
                    sr, notes)


def plot(analysis: Analysis, width: int = 1200, height: int = 800, title: str = "") -> Any:
    """A PIL image of every column over time, one panel each, beats as vertical lines."""
    import PIL.Image
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no GUI, no state
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    cols = analysis.columns
    axes = fig.subplots(len(cols), 1, sharex=True, squeeze=False)[:, 0]
    t = np.arange(len(analysis.values)) / analysis.fps
    for ax, name, col in zip(axes, cols, analysis.values.T, strict=True):
        if len(analysis.beats):  # one collection per panel: thousands of beats stay fast
            ax.vlines(analysis.beats, 0, 1, transform=ax.get_xaxis_transform(),
                      colors="#dddddd", linewidth=0.6, zorder=0)
        ax.plot(t, col, linewidth=0.8, color="#1f5fa8")
        ax.text(0.003, 0.95, name, transform=ax.transAxes, ha="left", va="top", fontsize=8,
                bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
        ax.tick_params(labelsize=7)
        ax.margins(x=0)
    axes[-1].set_xlabel("seconds", fontsize=8)
    if title:
        axes[0].set_title(title, fontsize=9)
    # fixed margins in pixels: tight_layout would measure every tick label (slow)
    fig.subplots_adjust(left=min(0.4, 70 / width), right=1 - 15 / width,
                        bottom=min(0.3, 45 / height), top=1 - (30 if title else 12) / height,
                        hspace=min(0.8, 0.2 + 25 * len(cols) / height))
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return PIL.Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
