"""LoRA files on a warm pipeline: each file becomes a PEFT adapter once, and a call switches
the adapters and their weights on or off. The base weights are never touched, so no LoRA
(or every LoRA at weight 0) gives the base model's images bit for bit, and a switch loads no
model. diffusers reads both layouts: A1111/kohya (`lora_unet_...lora_down.weight`, LyCORIS
LoCon too) and diffusers/PEFT (`unet....lora_A.weight`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sc_sd.options import Options
from sc_sd.prompts import take_loras
from sc_sd.sources import find_extra

MAX_ADAPTERS = 8  # adapters kept on a pipeline; the least recently used goes beyond that

LoraSet = tuple[tuple[str, float], ...]


def wanted(param: Iterable[Mapping[str, Any]] | None, *prompts: str) -> LoraSet:
    """One job's LoRAs: its `loras` param and the `<lora:name:w>` tags of its prompts, by name
    (a name given twice adds its weights). Weight 0 stays: the file is still read and
    checked, and the adapter adds nothing."""
    total: dict[str, float] = {}
    pairs = [(p["name"], float(p.get("weight", 1.0))) for p in param or ()]
    for prompt in prompts:
        pairs += take_loras(prompt)[1]
    for name, weight in pairs:
        total[name] = total.get(name, 0.0) + weight
    return tuple(sorted(total.items()))


def activate(loaded: Any, loras: LoraSet, options: Options) -> None:
    """Make `loras` the active adapters of `loaded`'s pipeline (none: all off)."""
    pipe = loaded.base
    if not loras:
        if loaded.adapters:
            pipe.disable_lora()
        return
    names = [_adapter(loaded, name, options) for name, _ in loras]
    pipe.enable_lora()
    pipe.set_adapters(names, adapter_weights=[w for _, w in loras])


def _adapter(loaded: Any, name: str, options: Options) -> str:
    """The adapter of LoRA `name` on `loaded`, read from its file the first time (and again
    when the file changed)."""
    path = find_extra(options, "loras", name)
    stat = path.stat()
    key = (name, stat.st_mtime_ns, stat.st_size)
    adapters = loaded.adapters  # key -> adapter name, least recently used first
    if key in adapters:
        adapters[key] = adapters.pop(key)
        return adapters[key]
    pipe = loaded.base
    for old in [k for k in adapters if k[0] == name]:  # the file changed: drop the old one
        pipe.delete_adapters(adapters.pop(old))
    while len(adapters) >= MAX_ADAPTERS:
        pipe.delete_adapters(adapters.pop(next(iter(adapters))))
    loaded.adapter_count += 1
    adapter = f"lora{loaded.adapter_count}"
    try:
        _check_kind(path)
        pipe.load_lora_weights(str(path), adapter_name=adapter)
    except Exception as e:
        if adapter in _names(pipe):
            pipe.delete_adapters(adapter)
        text = str(e).strip().splitlines()[0] if str(e).strip() else "(no message)"
        raise ValueError(f"cannot load LoRA file {path}: {type(e).__name__}: {text} (a LoRA "
                         "in the kohya/A1111 or diffusers layout for this model's family is "
                         "expected)") from e
    adapters[key] = adapter
    return adapter


def _check_kind(path: Any) -> None:
    """Refuse LyCORIS LoHa and LoKr files by name: diffusers reads LoRA and LoCon only."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    for marker, kind in ((".hada_w1_a", "LoHa"), (".lokr_w1", "LoKr")):
        if any(marker in k for k in keys):
            raise ValueError(f"it is a LyCORIS {kind}; diffusers reads LoRA and LoCon files only")


def _names(pipe: Any) -> set[str]:
    try:
        return {a for names in pipe.get_list_adapters().values() for a in names}
    except Exception:
        return set()
