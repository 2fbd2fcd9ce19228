"""One server for every SD test module: a CPU worker, the tiny models, and the tiny LoRA,
embedding and ControlNet files, all written here in the layouts users bring.

Nothing is downloaded: the hub is switched off (HF_HUB_OFFLINE=1) and HF_HOME is empty.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from sc_sd.cli import app
from sc_sd.tiny import (
    make_controlnet,
    make_embedding,
    make_lora,
    make_pipeline,
    make_xl_pipeline,
    make_xl_refiner_pipeline,
)
from typer.testing import CliRunner

from stablecore.client import Client
from stablecore.testing import ServerProcess

HUB_ID = "nobody-here/not-cached-sd-model"


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    for args in ([], ["--xl", "--name", "tiny-sdxl"]):
        result = CliRunner().invoke(app, ["make-tiny", str(folder), *args])
        assert result.exit_code == 0, result.output
    (folder / "broken.safetensors").write_bytes(b"\x00\x01 this is not a checkpoint" * 10)
    make_xl_refiner_pipeline(6).save_pretrained(folder / "tiny-sdxl-refiner")
    extras(folder)
    return folder


def extras(folder: Path) -> None:
    """LoRAs, embeddings and ControlNets for the tiny models, in the models folder's
    loras/, embeddings/ and controlnet/."""
    sd, xl = make_pipeline(0), make_xl_pipeline(0)  # the weights of tiny-sd and tiny-sdxl
    make_lora(sd, folder / "loras", "grain", seed=1)  # grain and grain-kohya
    make_lora(xl, folder / "loras" / "xl", "grain", seed=2)
    (folder / "loras" / "broken.safetensors").write_bytes(b"not a lora at all")
    module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file({f"{module}.hada_w1_a": torch.zeros(32, 4), f"{module}.alpha": torch.tensor(4.0)},
              folder / "loras" / "loha.safetensors")
    # glow and shine: the same vectors under two names, in A1111's two file layouts
    make_embedding(folder / "embeddings", "glow", seed=3, layout="pt")
    make_embedding(folder / "embeddings", "shine", seed=3)
    make_embedding(folder / "embeddings" / "xl", "xlglow", seed=4, xl=True)
    (folder / "embeddings" / "broken-words.pt").write_bytes(b"not an embedding")
    make_controlnet(sd, folder / "controlnet" / "tiny-canny", seed=5)
    make_controlnet(xl, folder / "controlnet" / "xl" / "tiny-canny", seed=6)
    (folder / "controlnet" / "broken.safetensors").write_bytes(b"not a controlnet")


@pytest.fixture(scope="session")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("sd") / "data", sd_models_dir=models,
                        sd_models=HUB_ID, sd_preview_every=2)
    srv.env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path_factory.mktemp("hf_home")))
    with srv:
        yield srv


@pytest.fixture
def client(server: ServerProcess) -> Iterator[Client]:
    with server.client() as c:
        yield c
