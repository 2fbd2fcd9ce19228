"""interrogate through a real server, with a tiny random CLIP in the Hugging Face cache
layout (as `models pull` leaves a repo) and a tiny random BLIP in the models folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from sc_interrogate import phrases
from tokenizers.pre_tokenizers import ByteLevel
from transformers import (
    AutoProcessor,
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)

from stablecore.client import Client
from stablecore.testing import ServerProcess, fetch_json, save_image

REPO = "test/tiny-clip"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *["a", "an", "the", "photo", "painting", "of", "cat", "dog", "house", "tree", "red", "blue", "green", "sky", "on", "with", "in", "field", "portrait", "city", "night", "river", "boat"]]


def tiny_clip(folder: Path) -> None:
    """CLIP's architecture and file layout at toy size: byte-level BPE without merges."""
    alphabet = sorted(ByteLevel.alphabet())
    tokens = [*alphabet, *(c + "</w>" for c in alphabet), "<|startoftext|>", "<|endoftext|>"]
    tokenizer = CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[])
    eos = len(tokens) - 1
    config = CLIPConfig(
        text_config={"vocab_size": len(tokens), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 77, "bos_token_id": eos - 1,
                     "eos_token_id": eos, "pad_token_id": eos},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2},
        projection_dim=16)
    images = CLIPImageProcessor(size={"shortest_edge": 32},
                                crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    CLIPModel(config).save_pretrained(folder)


def tiny_blip(folder: Path) -> None:
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)})
    config = BlipConfig(
        text_config={"vocab_size": len(WORDS), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 1, "num_attention_heads": 2,
                     "max_position_embeddings": 64, "bos_token_id": 2, "sep_token_id": 3,
                     "pad_token_id": 0, "encoder_hidden_size": 32},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2},
        projection_dim=16)
    images = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    BlipForConditionalGeneration(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    cache = tmp_path_factory.mktemp("cache")
    repo = cache / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    tiny_clip(snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    data = tmp_path_factory.mktemp("stablecore") / "data"
    folder = data / "models" / "interrogate"
    tiny_blip(folder / "tiny-blip")
    (folder / "colours.txt").write_text("# a list of our own\ncrimson\nteal\n\nochre\nteal\n")
    return {"cache": cache, "data": data, "clip": snapshot}


@pytest.fixture(scope="module")
def stablecore_server(world: dict[str, Path]) -> Iterator[ServerProcess]:
    with ServerProcess(world["data"], models_cache=world["cache"]) as server:
        yield server


def picture(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (48, 64, 3), np.uint8)


def by_hand(clip: Path, image: Path, texts: list[str]) -> np.ndarray:
    """Cosine similarities of the image to each text, straight from transformers."""
    processor, model = AutoProcessor.from_pretrained(clip), CLIPModel.from_pretrained(clip)
    with torch.no_grad(), PIL.Image.open(image) as im:
        img = model.get_image_features(**processor(images=im.convert("RGB"),
                                                   return_tensors="pt"))
        txt = model.get_text_features(**processor(text=texts, return_tensors="pt",
                                                  padding=True))
    img, txt = (getattr(x, "pooler_output", x).numpy() for x in (img, txt))
    img, txt = (x / np.linalg.norm(x, axis=-1, keepdims=True) for x in (img, txt))
    return txt @ img[0]


def test_ranking_is_the_cosine_order_computed_by_hand(stablecore_client: Client,
                                                      world: dict[str, Path],
                                                      tmp_path: Path) -> None:
    path = save_image(tmp_path, picture(1))
    job = stablecore_client.run("interrogate.clip", {"model": REPO, "flavors": 3, "top": 8},
                                {"image": path})
    assert job["state"] == "succeeded", job["error"]
    matches = job["outputs"]["matches"]["value"]
    lists = phrases.load({"STABLECORE_MODELS_HOME": str(world["data"] / "models")})
    assert list(matches) == ["mediums", "artists", "movements", "flavors", "colours"]
    for category, items in lists.items():
        scores = by_hand(world["clip"], path, items)
        order = np.argsort(-scores, kind="stable")[:8]
        assert [m["phrase"] for m in matches[category]] == [items[i] for i in order][:len(
            matches[category])]
        assert np.allclose([m["score"] for m in matches[category]], scores[order][:len(
            matches[category])], atol=1e-5)
    prompt = stablecore_client.download(job["outputs"]["text"]["id"], tmp_path / "p.txt")
    first = {c: [m["phrase"] for m in ms] for c, ms in matches.items()}
    assert prompt.read_text() == ", ".join([
        first["mediums"][0], "by " + first["artists"][0], first["movements"][0],
        *first["flavors"][:3], first["colours"][0]])
    assert "caption" not in matches


def test_a_caption_model_heads_the_prompt(stablecore_client: Client, tmp_path: Path) -> None:
    path = save_image(tmp_path, picture(2))
    job = stablecore_client.run("interrogate.clip", {"model": REPO, "flavors": 0,
                                                      "caption_model": "tiny-blip"},
                                {"image": path})
    assert job["state"] == "succeeded", job["error"]
    caption = job["outputs"]["matches"]["value"]["caption"][0]["phrase"]
    assert caption and set(caption.split()) <= set(WORDS)
    prompt = stablecore_client.download(job["outputs"]["text"]["id"], tmp_path / "p.txt")
    assert prompt.read_text().startswith(caption + ", ")


def test_similarity_scores_images_against_prompts_and_a_reference(
        stablecore_client: Client, world: dict[str, Path], tmp_path: Path) -> None:
    paths = [save_image(tmp_path, picture(s), f"{s}.png") for s in (3, 4, 5)]
    prompts = ["a red house", "a cat in a field"]
    job = stablecore_client.run("interrogate.similarity", {"model": REPO, "prompts": prompts},
                                {"images": paths, "reference": paths[1]})
    assert job["state"] == "succeeded", job["error"]
    table = fetch_json(stablecore_client, job["outputs"]["scores"], tmp_path)
    assert table["columns"] == [*prompts, "reference"]
    values = np.array(table["values"])
    assert values.shape == (3, 3)
    assert values[1, 2] == pytest.approx(1.0, abs=1e-5)  # the reference is image 1
    assert values[0, 2] < 1 - 1e-4 and values[2, 2] < 1 - 1e-4
    for row, path in zip(values, paths, strict=True):
        assert np.allclose(row[:2], by_hand(world["clip"], path, prompts), atol=1e-5)


def test_phrase_lists_load(tmp_path: Path) -> None:
    lists = phrases.load({})
    assert {k: len(v) for k, v in lists.items()} == {"mediums": 50, "artists": 96,
                                                     "movements": 61, "flavors": 173}
    assert all(len(set(v)) == len(v) and all(p.strip() == p and p for p in v)
               for v in lists.values())
    (tmp_path / "interrogate").mkdir()
    (tmp_path / "interrogate" / "mediums.txt").write_text("a fresco\n# not this\na fresco\n")
    mine = phrases.load({"STABLECORE_MODELS_HOME": str(tmp_path)})
    assert mine["mediums"] == ["a fresco"] and mine["artists"] == lists["artists"]


def test_errors_say_what_to_do(stablecore_client: Client, tmp_path: Path) -> None:
    path = save_image(tmp_path, picture(6))
    job = stablecore_client.run("interrogate.clip", {"model": "org/not-pulled"},
                                {"image": path})
    assert job["state"] == "failed"
    assert "cannot load org/not-pulled" in job["error"]
    assert "stable-core models pull interrogate" in job["error"]
    job = stablecore_client.run("interrogate.clip", {"model": "no such model"}, {"image": path})
    assert "must be a Hugging Face repo id (org/name) or a folder in" in job["error"]
    job = stablecore_client.run("interrogate.similarity", {"model": REPO}, {"images": [path]})
    assert job["state"] == "failed" and "give prompts, a reference image, or both" in \
        job["error"]
