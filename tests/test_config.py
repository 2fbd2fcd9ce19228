from pathlib import Path

import pytest

from stablecore.config import Settings, load_settings
from stablecore.errors import ConfigError


def test_layers_override_in_order(tmp_path: Path) -> None:
    (tmp_path / "stablecore.toml").write_text('port = 6000\nhost = "127.0.0.2"\nbatch_max = 4\n')
    env = {"STABLECORE_PORT": "7000", "STABLECORE_WORKERS": "cpu, cuda:1"}
    settings, origins = load_settings(env, {"port": 8000}, cwd=tmp_path)
    assert settings.port == 8000 and origins["port"] == "command line"
    assert settings.workers == ["cpu", "cuda:1"] and origins["workers"] == "environment"
    assert settings.batch_max == 4 and origins["batch_max"].startswith("file ")
    assert settings.host == "127.0.0.2"
    assert origins["max_attempts"] == "default"


def test_explicit_config_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings({}, config=tmp_path / "nope.toml", cwd=tmp_path)


def test_bad_values_name_the_setting_and_its_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'port' \\(environment\\)"):
        load_settings({"STABLECORE_PORT": "many"}, cwd=tmp_path)
    (tmp_path / "stablecore.toml").write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="colour"):
        load_settings({}, cwd=tmp_path)
    (tmp_path / "stablecore.toml").write_text("port = \n")
    with pytest.raises(ConfigError, match=r"stablecore\.toml"):
        load_settings({}, cwd=tmp_path)


def test_exposed_bind_requires_a_token() -> None:
    Settings(host="127.0.0.1").check_safe()
    Settings(host="localhost").check_safe()
    Settings(host="0.0.0.0", token="a-secret-of-16-chars").check_safe()
    with pytest.raises(ConfigError, match="STABLECORE_TOKEN"):
        Settings(host="0.0.0.0").check_safe()
