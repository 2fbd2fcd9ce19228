"""The `stable-core` command against a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import PIL.Image

from stablecore.testing import ServerProcess


def cli(server: ServerProcess | None, *args: str, cwd: Path | None = None,
        **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "COLUMNS": "200", **env}
    if server is not None:
        environ["STABLECORE_URL"] = server.url
    return subprocess.run([sys.executable, "-m", "stablecore", *args], capture_output=True,
                          text=True, timeout=120, env=environ, cwd=cwd)


def test_specs_lists_jobs(stablecore_server: ServerProcess) -> None:
    result = cli(stablecore_server, "specs")
    assert result.returncode == 0, result.stderr
    assert "testing.invert" in result.stdout and "image:image" in result.stdout


def test_run_uploads_follows_and_downloads(stablecore_server: ServerProcess,
                                           tmp_path: Path, png: Path) -> None:
    out = tmp_path / "out"
    result = cli(stablecore_server, "run", "testing.invert", "--input", f"image={png}",
                 "--out", str(out))
    assert result.returncode == 0, result.stderr
    (saved,) = out.iterdir()
    assert saved.name.endswith("_testing.invert.png")
    assert PIL.Image.open(saved).getpixel((0, 0)) == (245, 55, 225)
    assert f"image: {saved}" in result.stdout.replace("\n", "")


def test_run_parses_values_and_reports_failures(stablecore_server: ServerProcess,
                                                tmp_path: Path) -> None:
    ok = cli(stablecore_server, "run", "testing.echo", "text=hey you", "n=2", "-o", str(tmp_path))
    assert ok.returncode == 0, ok.stderr
    assert next(tmp_path.glob("*.txt")).read_text() == "hey youhey you"
    bad = cli(stablecore_server, "run", "testing.echo", "n=50")
    assert bad.returncode == 1 and "params.n" in bad.stderr
    failed = cli(stablecore_server, "run", "testing.crash", "how=exit")
    assert failed.returncode == 1 and "worker died: exit code 3" in failed.stderr
    missing = cli(stablecore_server, "run", "testing.invert", "--input", "image=/no/such.png")
    assert missing.returncode == 1 and "existing file" in missing.stderr
    assert cli(stablecore_server, "run", "testing.echo", "novalue").returncode == 1


def test_run_downloads_every_item_of_a_list_output(stablecore_server: ServerProcess,
                                                   tmp_path: Path) -> None:
    result = cli(stablecore_server, "run", "testing.frames", "n=3", "-o", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert len(list(tmp_path.glob("*_testing.frames.png"))) == 3


def test_jobs_list_show_cancel(stablecore_server: ServerProcess) -> None:
    with stablecore_server.client() as c:
        job = c.submit("testing.sleep", {"seconds": 60, "steps": 600})
    listed = cli(stablecore_server, "jobs", "list", "--limit", "100")
    assert job["id"] in listed.stdout
    assert '"spec": "testing.sleep"' in cli(stablecore_server, "jobs", "show", job["id"]).stdout
    cancelled = cli(stablecore_server, "jobs", "cancel", job["id"])
    assert cancelled.returncode == 0 and "cancel requested" in cancelled.stdout
    again = cli(stablecore_server, "jobs", "show", "j_missing")
    assert again.returncode == 1 and "no job 'j_missing'" in again.stderr


def test_unreachable_server_is_a_clear_error() -> None:
    result = cli(None, "specs", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1 and "cannot reach the server" in result.stderr


def test_config_shows_where_each_setting_comes_from(tmp_path: Path) -> None:
    (tmp_path / "stablecore.toml").write_text("port = 6001\n")
    result = cli(None, "config", cwd=tmp_path, STABLECORE_BATCH_MAX="3", COLUMNS="1000")
    assert result.returncode == 0, result.stderr
    lines = {line.split("│")[1].strip(): line for line in result.stdout.splitlines()
             if line.count("│") > 3}
    assert "6001" in lines["port"] and "stablecore.toml" in lines["port"]
    assert "environment" in lines["batch_max"] and "default" in lines["host"]
