"""A real OpenSSH server for the node tests: 127.0.0.1 only, a free port, its own host key,
one authorized client key, logging in as the current user; `env` is set in its sessions
(as a machine's own settings would be). Loaded by test_nodes.py and
test_cloud.py (it is not a test module)."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f",
                    str(path)], check=True)
    return path


def fingerprint(key: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-lf", str(key.with_suffix(".pub"))], check=True,
                         capture_output=True, text=True).stdout
    return out.split()[1]


class Sshd:
    def __init__(self, folder: Path, port: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.user = getpass.getuser()
        self.host_key = keygen(folder / "host_key")
        self.client_key = keygen(folder / "client_key")
        (folder / "authorized_keys").write_text(self.client_key.with_suffix(".pub").read_text())
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.host_key)

    def config(self) -> Path:
        path = self.folder / "sshd_config"
        path.write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key}
AuthorizedKeysFile {self.folder / 'authorized_keys'}
PidFile {self.folder / 'sshd.pid'}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
LogLevel ERROR
""" + (f"SetEnv {' '.join(f'{k}={v}' for k, v in self.env.items())}\n" if self.env else ""))
        return path

    def start(self) -> Sshd:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation needs it
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config())],
                                     stderr=(self.folder / "sshd.log").open("a"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.folder / 'sshd.log').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("sshd did not listen")

    def drop_connections(self) -> int:
        """SIGKILL the per-connection sshd processes, as a network cut would end them."""
        assert self.proc is not None
        children = psutil.Process(self.proc.pid).children()
        for child in children:
            child.send_signal(signal.SIGKILL)
        return len(children)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.drop_connections()
            self.proc.terminate()
            self.proc.wait(10)
