"""Rented GPU machines: RunPod and vast.ai through their documented HTTP APIs (httpx; their
SDKs pull conflicting dependencies). `up` rents one with SSH exposed and our public key in it;
the server then adds it as a node, stops it once idle (`idle_stop_min`), and `down`
destroys it. API keys come from the environment or a settings file only you can read."""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import platformdirs

from stablecore.errors import ConfigError, StableCoreError

KEY_VARS = {"runpod": "RUNPOD_API_KEY", "vast": "VAST_API_KEY"}
URL_VARS = {"runpod": "STABLECORE_RUNPOD_URL", "vast": "STABLECORE_VAST_URL"}
SETTINGS = platformdirs.user_config_path("stable-core") / "cloud.toml"


class CloudError(StableCoreError):
    """The provider refused or failed; the message never holds the API key."""

    status = 502


class PriceTooHigh(CloudError):
    """No machine at or below the price cap."""

    status = 409


@dataclass
class Instance:
    provider: str
    id: str
    name: str
    state: str
    price_per_hour: float
    gpu: str = ""
    gpus: int = 0
    ssh_host: str = ""
    ssh_port: int = 0
    user: str = "root"

    @property
    def ssh_url(self) -> str:
        return f"ssh://{self.user}@{self.ssh_host}:{self.ssh_port}"

    @property
    def node_name(self) -> str:
        return f"{self.provider}-{self.id}".lower()


def api_key(provider: str, environ: Mapping[str, str] = os.environ,
            settings: Path = SETTINGS) -> str:
    """From the environment, else `[provider] api_key` in the settings file, which must not
    be readable by others."""
    if environ.get(KEY_VARS[provider]):
        return environ[KEY_VARS[provider]]
    if settings.is_file():
        if settings.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{settings} holds API keys and others can read it: "
                              f"chmod 600 {settings}", field="settings")
        key = tomllib.loads(settings.read_text()).get(provider, {}).get("api_key")
        if key:
            return key
    raise ConfigError(f"no {provider} API key: set {KEY_VARS[provider]}, or api_key under "
                      f"[{provider}] in {settings} (chmod 600)", field="api_key")


def provider(name: str, environ: Mapping[str, str] = os.environ,
             settings: Path = SETTINGS) -> Any:
    from stablecore.cloud.runpod import RunPod
    from stablecore.cloud.vast import Vast

    kinds = {"runpod": RunPod, "vast": Vast}
    if name not in kinds:
        raise ConfigError(f"no cloud provider {name!r}; known: runpod, vast", field="provider")
    key = api_key(name, environ, settings)
    url = environ.get(URL_VARS[name])
    return kinds[name](key, url) if url else kinds[name](key)


class Api:
    """An HTTP API with a bearer key; errors name the call and the provider's words."""

    name = ""

    def __init__(self, key: str, base_url: str) -> None:
        self.key = key
        self.http = httpx.Client(base_url=base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"})

    def call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise CloudError(self._scrub(f"{self.name}: {method} {path}: {e}")) from None
        if r.is_error:
            try:
                body = r.json()
                said = body.get("error") or body.get("msg") or body.get("message") or body
            except ValueError:
                said = r.text[:300]
            raise CloudError(self._scrub(f"{self.name} answered {r.status_code} to {method} "
                                         f"{path}: {said}"))
        return r.json() if r.content else {}

    def _scrub(self, text: str) -> str:
        return text.replace(self.key, "***") if self.key else text
