"""ldsr through a real server: an LDM super-resolution pipeline of the real architecture
(a VQ-VAE that decodes 4x, a UNet on latents + image, DDIM) with tiny random weights, stored
as a pulled repo in the Hugging Face cache layout."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, LDMSuperResolutionPipeline, UNet2DModel, VQModel

from stablecore.client import Client
from stablecore.testing import ServerProcess, fetch_image, save_image

REPO = "test/tiny-ldsr"
COMMIT = "00112233445566778899aabbccddeeff00112233"


@pytest.fixture(scope="module")
def stablecore_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    torch.manual_seed(0)
    cache = tmp_path_factory.mktemp("cache")
    repo = cache / "hub" / f"models--{REPO.replace('/', '--')}"
    vqvae = VQModel(in_channels=3, out_channels=3, latent_channels=3, vq_embed_dim=3,
                    num_vq_embeddings=16, down_block_types=("DownEncoderBlock2D",) * 3,
                    up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(8, 8, 16),
                    layers_per_block=1, norm_num_groups=8)
    unet = UNet2DModel(sample_size=32, in_channels=6, out_channels=3, layers_per_block=1,
                       block_out_channels=(8, 16), norm_num_groups=8,
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    scheduler = DDIMScheduler(beta_start=0.0015, beta_end=0.0155, beta_schedule="linear",
                              clip_sample=False)
    LDMSuperResolutionPipeline(vqvae=vqvae, unet=unet, scheduler=scheduler).save_pretrained(
        repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    with ServerProcess(tmp_path_factory.mktemp("stablecore") / "data",
                       models_cache=cache) as server:
        yield server


def picture(width: int, height: int, alpha: bool = False) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    rgb = [x * 255 // max(1, width - 1), y * 255 // max(1, height - 1), (x + y) % 7 * 30]
    if alpha:
        rgb.append(x * 255 // max(1, width - 1))
    return np.stack(rgb, axis=-1).astype(np.uint8)


def upscale(client: Client, tmp_path: Path, pixels: np.ndarray, **params: object) -> tuple:
    image = client.upload(save_image(tmp_path, pixels))["id"]
    job = client.run("ldsr.upscale", {"model": REPO, "steps": 3, "seed": 1, **params},
                     {"image": image})
    assert job["state"] == "succeeded", job["error"]
    steps = [e["data"] for e in client.events(job["id"]) if e["type"] == "job.progress"]
    return fetch_image(client, job["outputs"]["image"], tmp_path), steps


def test_a_random_tiny_model_gives_four_times_the_size(stablecore_client: Client,
                                                       tmp_path: Path) -> None:
    out, steps = upscale(stablecore_client, tmp_path, picture(21, 13), tile=0)
    assert out.shape == (52, 84, 3)  # 21 x 13 mirrored to 24 x 16 for the UNet, cut back
    # the engine sends at most one progress event per 50 ms (and always the last step)
    seen = [(s["step"], s["total"]) for s in steps]
    assert seen[-1] == (3, 3) and seen == sorted(set(seen)) and {t for _, t in seen} == {3}
    again, _ = upscale(stablecore_client, tmp_path, picture(21, 13), tile=0)
    assert np.array_equal(out, again)  # the same seed, the same noise


def test_tiles_cover_a_larger_image(stablecore_client: Client, tmp_path: Path) -> None:
    out, steps = upscale(stablecore_client, tmp_path, picture(40, 24, alpha=True), tile=16,
                         overlap=4, steps=2)
    assert out.shape == (96, 160, 4)  # alpha kept
    assert steps[-1] == {**steps[-1], "step": 12, "total": 12}  # 3 x 2 tiles x 2 steps
    alpha = out[..., 3].astype(int)
    assert alpha[:, :8].mean() < 30 and alpha[:, -8:].mean() > 220


def test_cancel_lands_within_a_step(stablecore_client: Client, tmp_path: Path) -> None:
    (before,) = stablecore_client.workers()
    image = stablecore_client.upload(save_image(tmp_path, picture(64, 64)))["id"]
    job = stablecore_client.submit("ldsr.upscale", {"model": REPO, "steps": 1000, "tile": 0},
                                   {"image": image})
    for event in stablecore_client.events(job["id"]):
        if event["type"] == "job.progress" and event["data"]["step"] >= 2:
            break
    stablecore_client.cancel(job["id"])
    events: list[dict] = []
    result = stablecore_client.wait(job["id"], events.append)
    assert result["state"] == "cancelled"
    last = max(e["data"]["step"] for e in events if e["type"] == "job.progress")
    assert last < 1000
    (after,) = stablecore_client.workers()
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"])
    assert f"ldsr/{REPO}" in {m["key"] for m in after["models"]}


def test_errors_are_clear(stablecore_client: Client, tmp_path: Path) -> None:
    image = stablecore_client.upload(save_image(tmp_path, picture(8, 8)))["id"]
    job = stablecore_client.run("ldsr.upscale", {"model": "org/not-pulled"}, {"image": image})
    assert job["state"] == "failed" and "stable-core models pull ldsr" in job["error"]
    job = stablecore_client.run("ldsr.upscale", {"model": REPO, "tile": 32, "overlap": 16},
                                {"image": image})
    assert "overlap (16) must be under half the tile size (32)" in job["error"]
