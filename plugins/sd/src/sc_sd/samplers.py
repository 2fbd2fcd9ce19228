"""Sampler choices: the name a job takes, the diffusers scheduler it means, the A1111 name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SamplerName = Literal["euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "ddim", "pndm", "unipc"]


@dataclass(frozen=True)
class Sampler:
    scheduler: str
    """diffusers class name"""
    a1111: str
    """the name A1111 writes in its `Sampler:` field"""
    overrides: dict[str, Any] = field(default_factory=dict)


SAMPLERS: dict[str, Sampler] = {
    "euler": Sampler("EulerDiscreteScheduler", "Euler"),
    "euler_a": Sampler("EulerAncestralDiscreteScheduler", "Euler a"),
    "dpmpp_2m": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M",
                        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False}),
    "dpmpp_2m_karras": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M Karras",
                               {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True}),
    "ddim": Sampler("DDIMScheduler", "DDIM"),
    "pndm": Sampler("PNDMScheduler", "PLMS", {"skip_prk_steps": True}),
    "unipc": Sampler("UniPCMultistepScheduler", "UniPC"),
}


def make_scheduler(name: str, base_config: Any) -> Any:
    """A fresh scheduler of sampler `name`, keeping the model's own noise schedule settings."""
    import diffusers

    sampler = SAMPLERS[name]
    cls = getattr(diffusers, sampler.scheduler)
    return cls.from_config(base_config, **sampler.overrides)
