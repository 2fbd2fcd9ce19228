"""Settings: defaults < config file (TOML) < STABLECORE_* environment < CLI flags.

`load_settings` takes the environment and the CLI values as arguments, so tests pass dicts,
and returns where each value came from, for `stable-core config`.
"""

from __future__ import annotations

import ipaddress
import tomllib
from collections.abc import Mapping
from pathlib import Path

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stablecore.errors import ConfigError

ENV_PREFIX = "STABLECORE_"
CONFIG_NAME = "stablecore.toml"
MIN_TOKEN_CHARS = 16


class Settings(BaseModel):
    """Everything an operator can set. Field descriptions are shown by `stable-core config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to bind; non-loopback needs a token")
    port: int = Field(5000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    data_dir: Path = Field(Path("data"), description="SQLite database and artifact files")
    token: str | None = Field(None, description="access token required on every route")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names served without a token besides loopback ones (DNS rebinding guard)",
    )
    workers: list[str] = Field(
        default_factory=list,
        description="one worker per entry: 'cpu' or 'cuda:N'; empty = one per GPU, else one cpu",
    )
    max_upload_mb: float = Field(512, gt=0, description="largest accepted upload")
    max_body_mb: float = Field(1, gt=0, description="largest request body other than uploads")
    job_timeout_s: float = Field(3600, gt=0, description="a job running longer is failed")
    cancel_grace_s: float = Field(5, ge=0, description="wait before a cancel kills the worker")
    worker_max_jobs: int = Field(0, ge=0, description="recycle a worker after N jobs (0 = never)")
    worker_max_rss_mb: float | None = Field(
        None, ge=0, description="recycle an idle worker above this RSS (default: half the "
        "machine's memory shared among the workers; 0 = never)")
    max_input_mpx: float = Field(64, ge=0, description="largest input image in megapixels, "
                                 "checked before decoding (0 = no limit)")
    preview_retention_s: float = Field(3600, ge=0, description="how long previews of finished "
                                       "jobs are kept")
    models_dir: Path | None = Field(None, description="model folders, one per plugin "
                                    "(default data_dir/models)")
    share_files: bool = Field(True, description="local workers read inputs by path; off: "
                              "they fetch the bytes as a remote worker does")
    heartbeat_timeout_s: float = Field(60, gt=0, description="a worker silent this long is "
                                       "killed")
    worker_memory_limit_mb: float = Field(
        0, ge=0, description="hard address-space limit per worker (0 = none; not with CUDA)"
    )
    cache_budget_mb: float = Field(8192, gt=0, description="model cache size per worker")
    batch_max: int = Field(8, ge=1, description="most jobs run together as one batch")
    max_attempts: int = Field(3, ge=1, description="runs of a job interrupted by a server crash")
    event_retention_s: float = Field(86400, gt=0, description="how long events are kept")
    plugins_dir: Path | None = Field(None, description="plugin manager home "
                                     "(default data_dir/plugins)")
    plugin_indexes: list[str] = Field(default_factory=list,
                                      description="plugin index files (JSON URLs or paths)")
    plugin_index_github: bool = Field(True, description="search GitHub for plugins when online")
    uv_args: list[str] = Field(default_factory=list,
                               description="extra `uv pip` arguments, e.g. --offline")

    @property
    def plugins_home(self) -> Path:
        return self.plugins_dir or self.data_dir / "plugins"

    @property
    def models_home(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    def check_safe(self, has_users: bool = False) -> None:
        """Raise if the settings would expose the server without credentials: beyond
        loopback, sign-in needs users (`has_users`) or a strong shared token."""
        if is_loopback(self.host) or (has_users and not self.token):
            return
        if not self.token:
            raise ConfigError(
                f"refusing to bind {self.host} without an access token or a user: add an "
                f"admin with `stable-core users add NAME`, or set a token with "
                f"--token, {ENV_PREFIX}TOKEN or `token = \"...\"` in {CONFIG_NAME} "
                f"(`stable-core token new` prints one)",
                field="token",
            )
        if len("".join(self.token.split())) < MIN_TOKEN_CHARS:
            raise ConfigError(
                f"refusing to bind {self.host} with a weak access token: it needs at least "
                f"{MIN_TOKEN_CHARS} non-blank characters; `stable-core token new` prints one",
                field="token",
            )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def find_config_file(explicit: Path | None, cwd: Path) -> Path | None:
    """The --config file, else ./stablecore.toml, else the user config dir's, else none."""
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"config file not found: {explicit}", field="config")
        return explicit
    user = platformdirs.user_config_path("stable-core") / CONFIG_NAME
    for candidate in (cwd / CONFIG_NAME, user):
        if candidate.is_file():
            return candidate
    return None


def _from_env(environ: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, field in Settings.model_fields.items():
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None:
            continue
        is_list = getattr(field.annotation, "__origin__", None) is list
        values[name] = [x.strip() for x in raw.split(",") if x.strip()] if is_list else raw
    return values


def load_settings(
    environ: Mapping[str, str],
    cli: Mapping[str, object] | None = None,
    config: Path | None = None,
    cwd: Path | None = None,
) -> tuple[Settings, dict[str, str]]:
    """Merge the four layers; return the settings and, per field, the layer it came from."""
    layers: list[tuple[str, dict[str, object]]] = []
    path = find_config_file(config, cwd or Path.cwd())
    if path is not None:
        try:
            layers.append((f"file {path}", tomllib.loads(path.read_text())))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}", field="config") from e
    layers.append(("environment", _from_env(environ)))
    layers.append(("command line", {k: v for k, v in (cli or {}).items() if v is not None}))

    merged: dict[str, object] = {}
    origins = {name: "default" for name in Settings.model_fields}
    for origin, values in layers:
        for key, value in values.items():
            merged[key] = value
            origins[key] = origin
    try:
        settings = Settings(**merged)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(
            f"setting {field!r} ({origins.get(field, 'unknown')}): {err['msg']}", field=field
        ) from e
    return settings, origins
