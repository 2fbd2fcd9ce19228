"""Write an SD 1.x pipeline's weights in the original (LDM / A1111) single-file key layout.

`diffusers` reads that layout (`from_single_file`) but ships no writer. The tiny test model
needs one, so that the single-file path is tested on a real LDM-layout checkpoint. Only the
SD 1.x layout is covered: a UNet of ResNet/Transformer blocks, a KL VAE and a CLIP text model.
"""

from __future__ import annotations

import re
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"),
               ("time_emb_proj", "emb_layers.1"), ("norm2", "out_layers.0"),
               ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
UNET_DIRECT = {"time_embedding.linear_1": "time_embed.0",
               "time_embedding.linear_2": "time_embed.2", "conv_in": "input_blocks.0.0",
               "conv_norm_out": "out.0", "conv_out": "out.2"}
VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v",
                 "to_out.0": "proj_out"}


def _rename(rest: str, pairs: list[tuple[str, str]]) -> str:
    for new, old in pairs:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    return rest


def unet_key(key: str, layers: int) -> str:
    """A diffusers UNet key as its LDM key; `layers` is the config's `layers_per_block`."""
    head, _, param = key.rpartition(".")
    if head in UNET_DIRECT:
        return f"{UNET_DIRECT[head]}.{param}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, part, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = 1 + block * (layers + 1) + layer
        return (f"input_blocks.{index}.0.{_rename(rest, UNET_RESNET)}" if part == "resnets"
                else f"input_blocks.{index}.1.{rest}")
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{(int(m[1]) + 1) * (layers + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_rename(m[2], UNET_RESNET)}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        block, part, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
        index = block * (layers + 1) + layer
        return (f"output_blocks.{index}.0.{_rename(rest, UNET_RESNET)}" if part == "resnets"
                else f"output_blocks.{index}.1.{rest}")
    raise KeyError(f"no LDM name for UNet key {key!r}")


def unet_upsampler_key(key: str, layers: int, has_attention: bool) -> str | None:
    m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key)
    if m is None:
        return None
    slot = 2 if has_attention else 1
    return f"output_blocks.{int(m[1]) * (layers + 1) + layers}.{slot}.conv.{m[2]}"


def vae_key(key: str, blocks: int) -> str:
    """A diffusers AutoencoderKL key as its LDM key; `blocks` counts encoder down blocks."""
    key = key.replace("conv_norm_out", "norm_out").replace("conv_shortcut", "nin_shortcut")
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"encoder.down.{m[1]}.block.{m[2]}"
    if m := re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.+)", key):
        return f"encoder.down.{m[1]}.downsample.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.resnets\.(.+)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.block.{m[2]}"
    if m := re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.+)", key):
        return f"decoder.up.{blocks - 1 - int(m[1])}.upsample.{m[2]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}"
    return key  # conv_in, conv_out, norm_out, quant_conv, post_quant_conv keep their names


def to_ldm(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """One flat state dict in the SD 1.x checkpoint layout, from the three loaded models."""
    layers = unet.config.layers_per_block
    attention_ups = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    out: dict[str, Any] = {}
    for key, value in unet.state_dict().items():
        block = int(key.split(".")[1]) if key.startswith("up_blocks.") else -1
        name = unet_upsampler_key(key, layers, block in attention_ups) or unet_key(key, layers)
        out[UNET_PREFIX + name] = value.contiguous()
    blocks = len(vae.config.down_block_types)
    for key, value in vae.state_dict().items():
        name = vae_key(key, blocks)
        if ".mid.attn_1." in name and value.ndim == 2:  # LDM keeps these as 1x1 convolutions
            value = value[:, :, None, None]
        out[VAE_PREFIX + name] = value.contiguous()
    for key, value in text_encoder.state_dict().items():
        if not key.startswith("text_model."):  # transformers 5 names keys without it
            key = "text_model." + key
        out[CLIP_PREFIX + key] = value.contiguous()
    return out
