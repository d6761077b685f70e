"""A real OpenSSH server on 127.0.0.1 for the SSH profiling tests: a free port, a generated host key
and user key, a client config that trusts only that host key (host-key checking on)."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def unavailable_reason() -> str | None:
    if not Path(SSHD).exists() or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return (
            "openssh-server is not installed (make test installs it from Debian's packages: "
            "apt-get install openssh-server)"
        )
    if os.geteuid() != 0:
        return "sshd with a generated config needs root here (it must switch to the login user)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LoopbackSSH:
    root: Path
    port: int
    user: str
    client_config: Path
    user_key: Path

    @property
    def uri(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        pid_file = self.root / "sshd.pid"
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start(root: Path) -> LoopbackSSH:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    _keygen(root / "host_key")
    _keygen(root / "user_key")
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    port = free_port()
    (root / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {root / 'host_key'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                f"PidFile {root / 'sshd.pid'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    client = root / "ssh_config"
    client.write_text(
        "\n".join(
            [
                "Host 127.0.0.1",
                f"  IdentityFile {root / 'user_key'}",
                "  IdentitiesOnly yes",
                f"  UserKnownHostsFile {root / 'known_hosts'}",
                "  StrictHostKeyChecking yes",
                "  LogLevel ERROR",
                "",
            ]
        )
    )
    os.chmod(client, 0o600)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    subprocess.run([SSHD, "-f", str(root / "sshd_config"), "-E", str(root / "sshd.log")], check=True)
    server = LoopbackSSH(root, port, getpass.getuser(), client, root / "user_key")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"sshd did not start on port {port}: {(root / 'sshd.log').read_text()}")
