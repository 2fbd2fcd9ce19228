"""audio.features through a real server, on sounds made here: a 120 BPM click track gives
beats 0.5 s apart, a tone puts its energy in its band, RMS and centroid have their known
values, every promised format reads, and bad input is refused clearly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import soundfile as sf

from stablecore.client import ApiError
from stablecore.testing import fetch_json

# The worker imports librosa on the first audio job (seconds; longer on a cold cache).
pytestmark = pytest.mark.timeout(300)

SR = 44100
SPEC = "audio.features"


def click_track(seconds: float = 12.0, bpm: float = 120.0, tone_hz: float = 3000.0,
                tone_amp: float = 0.3) -> np.ndarray:
    """Decaying 1 kHz clicks on every beat from 0.25 s, over a steady sine of `tone_hz`."""
    n = int(seconds * SR)
    y = np.zeros(n)
    t = np.arange(int(0.03 * SR)) / SR
    click = np.sin(2 * np.pi * 1000 * t) * np.exp(-t * 150)
    for beat in np.arange(0.25, seconds - 0.05, 60.0 / bpm):
        i = int(beat * SR)
        y[i:i + len(click)] += 0.6 * click
    y += tone_amp * np.sin(2 * np.pi * tone_hz * np.arange(n) / SR)
    return y.astype(np.float32)


def save(tmp_path: Path, y: np.ndarray, name: str) -> Path:
    path = tmp_path / name
    sf.write(path, y, SR)
    return path


def table(doc: dict) -> dict[str, np.ndarray]:
    values = np.array(doc["values"])
    return {c: values[:, i] for i, c in enumerate(doc["columns"])}


@pytest.fixture(scope="module")
def clicks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("audio"), click_track(), "clicks.wav")


BANDS = [[20, 250], [250, 2000], [2000, 4000], [4000, 8000]]


def test_click_track_beats_bands_rms_and_centroid(stablecore_client, tmp_path, clicks):
    job = stablecore_client.run(SPEC, {"fps": 24, "bands": BANDS}, {"audio": clicks})
    assert job["state"] == "succeeded", job
    doc = fetch_json(stablecore_client, job["outputs"]["features"], tmp_path)
    assert doc["rate"] == 24
    assert doc["columns"] == ["rms", "band_20_250", "band_250_2000", "band_2000_4000",
                              "band_4000_8000", "onset", "beat", "centroid"]
    cols = table(doc)
    assert len(cols["rms"]) == 12 * 24

    beats = np.array(fetch_json(stablecore_client, job["outputs"]["beats"], tmp_path)["values"])
    times = beats[:, 0]
    assert len(times) >= 18
    gaps = np.diff(times)
    assert np.all(np.abs(gaps - 0.5) < 0.03), gaps
    # on the clicks: each beat lies within 30 ms of a click start (0.25 + 0.5 k)
    phase = (times - 0.25) % 0.5
    assert np.all(np.minimum(phase, 0.5 - phase) < 0.03), times
    pulse_frames = np.flatnonzero(cols["beat"])
    assert len(pulse_frames) == len(times) and np.all(np.diff(pulse_frames) == 12)

    # the 3 kHz tone (amplitude 0.3: mean square 0.045) dominates the 2-4 kHz band
    bands = np.array([cols[f"band_{lo}_{hi}"] for lo, hi in BANDS])
    middle = slice(12, -12)  # away from the zero padding at the ends
    assert np.all(bands[:, middle].argmax(axis=0) == 2)
    assert np.median(cols["band_2000_4000"][middle]) == pytest.approx(0.045, rel=0.05)
    assert np.median(cols["rms"][middle]) == pytest.approx(np.sqrt(0.045), rel=0.05)
    # onsets peak on the click frames; the centroid sits near the tone between clicks
    onset = cols["onset"]
    assert np.median(onset[pulse_frames]) > 5 * np.median(onset)
    assert np.median(cols["centroid"][middle]) == pytest.approx(3000, rel=0.1)

    with PIL.Image.open(stablecore_client.download(job["outputs"]["plot"]["id"],
                                                   tmp_path / "plot.png")) as im:
        assert im.size == (1200, 800)
        assert len(np.unique(np.asarray(im).reshape(-1, 3), axis=0)) > 10  # something drawn


def test_band_energy_follows_the_tone(stablecore_client, tmp_path):
    for hz, band in ((120, 0), (900, 1), (6000, 3)):
        path = save(tmp_path, click_track(4.0, tone_hz=hz), f"t{hz}.wav")
        job = stablecore_client.run(SPEC, {"bands": BANDS, "include": ["bands"]},
                                    {"audio": path})
        assert job["state"] == "succeeded", job
        doc = fetch_json(stablecore_client, job["outputs"]["features"], tmp_path)
        energy = np.array(doc["values"])[5:-5].mean(axis=0)
        assert energy.argmax() == band, (hz, energy)


@pytest.mark.parametrize("ext", ["flac", "ogg", "mp3"])
def test_compressed_formats_read(stablecore_client, tmp_path, ext):
    path = save(tmp_path, click_track(6.0), f"clicks.{ext}")
    job = stablecore_client.run(SPEC, {"include": ["rms", "beat"], "fps": 30},
                                {"audio": path})
    assert job["state"] == "succeeded", job
    doc = fetch_json(stablecore_client, job["outputs"]["features"], tmp_path)
    assert doc["columns"] == ["rms", "beat"] and len(doc["values"]) == 6 * 30
    times = np.array(fetch_json(stablecore_client, job["outputs"]["beats"],
                           tmp_path)["values"])[:, 0]
    assert len(times) >= 8 and np.all(np.abs(np.diff(times) - 0.5) < 0.03)


def test_options_range_normalize_and_pulse_decay(stablecore_client, tmp_path, clicks):
    job = stablecore_client.run(SPEC, {"fps": 10, "start": 2.0, "duration": 5.0,
                                       "normalize": "minmax", "pulse_decay": 0.3,
                                       "include": ["rms", "onset", "beat"]},
                                {"audio": clicks})
    assert job["state"] == "succeeded", job
    doc = fetch_json(stablecore_client, job["outputs"]["features"], tmp_path)
    cols = table(doc)
    assert doc["rate"] == 10 and len(cols["rms"]) == 50
    for name in ("rms", "onset"):
        assert cols[name].min() == pytest.approx(0) and cols[name].max() == pytest.approx(1)
    beat = cols["beat"]
    peaks = np.flatnonzero(beat == 1.0)
    assert len(peaks) >= 8
    after = beat[peaks[0] + 1]
    assert after == pytest.approx(np.exp(-1 / 3), rel=1e-6)  # one frame of a 0.3 s decay


def test_progress_is_reported(stablecore_client, clicks):
    art = stablecore_client.upload(clicks)["id"]
    job = stablecore_client.submit(SPEC, {"fps": 60}, {"audio": art})
    events: list[dict] = []
    done = stablecore_client.wait(job["id"], on_event=events.append)
    assert done["state"] == "succeeded", done
    steps = [(e["data"]["step"], e["data"]["total"]) for e in events
             if e["type"] == "job.progress"]
    assert steps and steps[-1][0] == steps[-1][1]


def test_bad_input_is_refused_clearly(stablecore_client, tmp_path, clicks):
    art = stablecore_client.upload(clicks)["id"]
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {"fps": 0}, {"audio": art})
    assert e.value.status == 422 and e.value.field == "params.fps"
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {"bands": [[100, 200, 300]]}, {"audio": art})
    assert e.value.field.startswith("params.bands")
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {"include": ["loudness"]}, {"audio": art})
    assert e.value.field.startswith("params.include")
    image = tmp_path / "x.png"
    PIL.Image.new("RGB", (8, 8)).save(image)
    with pytest.raises(ApiError) as e:
        stablecore_client.submit(SPEC, {}, {"audio": stablecore_client.upload(image)["id"]})
    assert e.value.field == "inputs.audio" and "image" in e.value.detail
    job = stablecore_client.run(SPEC, {"bands": [[500, 100]]}, {"audio": art})
    assert job["state"] == "failed" and "band 500-100 Hz" in job["error"]
    job = stablecore_client.run(SPEC, {"bands": [[12000, 15000]]}, {"audio": art})
    assert job["state"] == "failed" and "raise sample_rate" in job["error"]
    job = stablecore_client.run(SPEC, {"start": 60}, {"audio": art})
    assert job["state"] == "failed" and "past the end" in job["error"]
    # a file that says RIFF/WAVE but holds no audio
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x24\x00\x00\x00WAVEjunkjunkjunk")
    job = stablecore_client.run(SPEC, {}, {"audio": broken})
    assert job["state"] == "failed" and "cannot decode the audio file" in job["error"]
