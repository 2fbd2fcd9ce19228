"""Tiny SD 1.x and SDXL pipelines with random weights, built from configs, for tests.

Nothing is downloaded: the CLIP tokenizer gets a byte-level vocabulary written here (every
byte is a token, no merges), and the UNet, VAE and text encoder are small random models of
the SD 1.x (or SDXL) architecture. `make_tiny` writes SD 1.x in the two layouts users bring:
- `<name>/`: a diffusers folder (`from_pretrained`);
- `<name>.safetensors` in the original single-file layout, with `<name>.config/` beside it
  holding only the configs and tokenizer that `from_single_file` needs (no weights).
"""

from __future__ import annotations

import json
import tempfile
from copy import deepcopy
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from sc_sd.ldm import to_ldm

SPECIAL_TOKENS = ["<|startoftext|>", "<|endoftext|>"]


def byte_symbols() -> list[str]:
    """One visible character per byte, as byte-level BPE spells text: printable Latin-1
    bytes stand for themselves, the others take the code points from 256 up."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)}
    symbols, shifted = [], 0
    for b in range(256):
        if b in printable:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def make_tokenizer(folder: Path) -> CLIPTokenizer:
    symbols = byte_symbols()
    vocab = {tok: i for i, tok in enumerate([*symbols, *(s + "</w>" for s in symbols),
                                             *SPECIAL_TOKENS])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                         model_max_length=77)


def _vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1,
        block_out_channels=(16, 16, 32, 32), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=8, sample_size=64)


def _text_config(tokenizer: CLIPTokenizer) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id)


def make_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """The tiny SD 1.x pipeline in memory: random weights drawn from `seed`."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        attention_head_dim=4, norm_num_groups=16)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, steps_offset=1, skip_prk_steps=True,
                              set_alpha_to_one=False)
    return StableDiffusionPipeline(vae=_vae(), text_encoder=CLIPTextModel(_text_config(tokenizer)),
                                   tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def make_xl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """The tiny SDXL pipeline: two text encoders, size and crop conditioning."""
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
    text = _text_config(tokenizer)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), cross_attention_dim=2 * text.hidden_size,
        # six size/crop numbers of 8 features each, and the pooled second text embedding
        projection_class_embeddings_input_dim=6 * 8 + text.projection_dim, norm_num_groups=16)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")
    return StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=CLIPTextModel(text), text_encoder_2=CLIPTextModelWithProjection(
            text), tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)


def make_xl_refiner_pipeline(seed: int = 0) -> StableDiffusionXLImg2ImgPipeline:
    """A tiny SDXL refiner: the second text encoder only, and an aesthetic score in place of
    the target size among the UNet's size numbers (five of them)."""
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = make_tokenizer(Path(tmp))
    text = _text_config(tokenizer)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2), cross_attention_dim=text.hidden_size,
        projection_class_embeddings_input_dim=5 * 8 + text.projection_dim, norm_num_groups=16)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                       beta_schedule="scaled_linear", steps_offset=1,
                                       timestep_spacing="leading")
    return StableDiffusionXLImg2ImgPipeline(
        vae=_vae(), text_encoder=None, text_encoder_2=CLIPTextModelWithProjection(text),
        tokenizer=None, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)


def make_tiny(dest: Path, name: str = "tiny-sd", seed: int = 0,
              xl: bool = False) -> dict[str, Path]:
    """Write the tiny model as a diffusers folder and, for SD 1.x, as a single file with its
    config folder."""
    dest.mkdir(parents=True, exist_ok=True)
    folder = dest / name
    if xl:
        make_xl_pipeline(seed).save_pretrained(folder, safe_serialization=True)
        return {"folder": folder}
    pipe = make_pipeline(seed)
    single, config = dest / f"{name}.safetensors", dest / f"{name}.config"
    pipe.save_pretrained(folder, safe_serialization=True)
    pipe.save_pretrained(config, safe_serialization=True)
    for weights in [*config.rglob("*.safetensors"), *config.rglob("*.bin")]:
        weights.unlink()
    save_file(to_ldm(pipe.unet, pipe.vae, pipe.text_encoder), single)
    return {"folder": folder, "single_file": single, "config": config}


LORA_TARGETS = {"unet": ["to_q", "to_k", "to_v", "to_out.0"],
                "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"]}
KOHYA_PREFIX = {"unet": "lora_unet_", "text_encoder": "lora_te1_", "text_encoder_2": "lora_te2_"}


def make_lora(pipe: StableDiffusionPipeline | StableDiffusionXLPipeline, folder: Path, name: str,
              seed: int = 0, rank: int = 4) -> dict[str, Path]:
    """A random LoRA for `pipe`'s UNet and text encoders, written twice with equal weights:
    `<name>.safetensors` in the diffusers/PEFT layout and `<name>-kohya.safetensors` in the
    A1111/kohya one (`lora_unet_..._to_q.lora_down.weight`, `.lora_up.weight`, `.alpha`).
    `pipe` itself is left as it was."""
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"unet": pipe.unet, "text_encoder": pipe.text_encoder}
    if getattr(pipe, "text_encoder_2", None) is not None:
        parts["text_encoder_2"] = pipe.text_encoder_2
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for part, model in parts.items():
        targets = LORA_TARGETS["unet" if part == "unet" else "text_encoder"]
        copy = inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=targets,
                                                  init_lora_weights=False),
                                       deepcopy(model), adapter_name=name)
        layers[part] = {k: v * 0.5 for k, v in get_peft_model_state_dict(
            copy, adapter_name=name).items()}
    # files in the wild name the text encoders' modules `text_model.encoder...`
    layers = {part: {k if part == "unet" or k.startswith("text_model.") else "text_model." + k: v
                     for k, v in sd.items()} for part, sd in layers.items()}
    save_file({f"{part}.{k}": v.contiguous() for part, sd in layers.items()
               for k, v in sd.items()}, folder / f"{name}.safetensors")
    kohya: dict[str, torch.Tensor] = {}
    for part, sd in layers.items():
        prefix = "lora_te_" if part == "text_encoder" and len(parts) == 2 else KOHYA_PREFIX[part]
        for key, value in sd.items():
            module, kind = key.rsplit(".lora_", 1)  # e.g. "...attn1.to_q", "A.weight"
            if part == "unet" and len(parts) == 3:
                module = _sgm_name(module)
            base = prefix + module.replace(".", "_")
            kohya[f"{base}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
            kohya[f"{base}.alpha"] = torch.tensor(float(rank))
    save_file({k: v.contiguous() for k, v in kohya.items()}, folder / f"{name}-kohya.safetensors")
    return {"diffusers": folder / f"{name}.safetensors",
            "kohya": folder / f"{name}-kohya.safetensors"}


def _sgm_name(module: str, per_block: int = 2) -> str:
    """An SDXL UNet module's name in the original (SGM) layout, which kohya's SDXL LoRAs use:
    `down_blocks.1.attentions.0.x` is `input_blocks.4.1.x` with two layers per block."""
    kind, rest = module.split(".", 1)
    if kind == "mid_block":
        return "middle_block.1." + rest.split(".", 2)[2]
    block, _, layer, tail = rest.split(".", 3)  # "<block>.attentions.<layer>.<tail>"
    if kind == "down_blocks":
        return f"input_blocks.{int(block) * (per_block + 1) + int(layer) + 1}.1.{tail}"
    return f"output_blocks.{int(block) * (per_block + 1) + int(layer)}.1.{tail}"


def make_embedding(folder: Path, name: str, seed: int = 0, vectors: int = 2, xl: bool = False,
                   layout: str = "safetensors") -> Path:
    """A random textual-inversion embedding of `vectors` tokens for the tiny models: A1111's
    `.pt` layout (`string_to_param`), a `.safetensors` with one tensor, or SDXL's two
    (`clip_l`, `clip_g`)."""
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    vector = torch.randn(vectors, 32)
    if layout == "pt":
        path = folder / f"{name}.pt"
        torch.save({"string_to_param": {"*": vector}, "name": name, "step": 100}, path)
        return path
    path = folder / f"{name}.safetensors"
    save_file({"clip_l": vector, "clip_g": torch.randn(vectors, 32)} if xl
              else {"emb_params": vector}, path)
    return path


def make_controlnet(pipe: StableDiffusionPipeline | StableDiffusionXLPipeline, folder: Path,
                    seed: int = 0) -> Path:
    """A ControlNet for `pipe`'s UNet as a diffusers folder (config.json and weights). Made
    from the UNet, as ControlNet training starts; its zero convolutions get random weights,
    so that it steers."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    model = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():
        for conv in [*model.controlnet_down_blocks, model.controlnet_mid_block]:
            conv.weight.normal_(0, 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    return folder
