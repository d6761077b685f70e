"""Profiling on any machine reachable over SSH: a Raspberry Pi, a Linux board, a Mac.

The system OpenSSH client does the work, so the user's `~/.ssh/config`, keys, agent and jump hosts
apply, and host-key checking stays on (an unknown host key fails; edgekd never accepts one). The
artifact and the self-contained bench script (`edgekd.bench`) go to a fresh temporary
directory on the device as a tar stream over the SSH channel (no scp or sftp needed there); the
script's JSON comes back on stdout; the directory, and any bench still running in it, are removed
afterwards, also when the bench fails, times out or the user presses Ctrl-C.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shlex
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from edgekd import bench
from edgekd.bench import MISSING_RUNTIME_EXIT, one_line
from edgekd.devices import (
    Measurement,
    ProfileSettings,
    artifact_format,
    redacted,
    refuse_option_like,
    refuse_unsafe_characters,
)
from edgekd.devices.local import latency_from_bench
from edgekd.errors import ConfigError, DeviceError

log = logging.getLogger(__name__)

BENCH_SCRIPT = Path(bench.__file__)
REMOTE_PREFIX = "edgekd-bench."
UNREACHABLE = (
    "Connection refused",
    "No route to host",
    "Could not resolve hostname",
    "Connection timed out",
    "Operation timed out",
    "Network is unreachable",
    "Connection closed by",
)


@dataclass(frozen=True)
class SSHDevice:
    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"  # the device's Python, with numpy and a runtime
    ssh_config: Path | None = None  # an ssh_config file instead of ~/.ssh/config (-F)
    connect_timeout_s: int = 10

    def __post_init__(self) -> None:
        # Checked here, not only in from_uri, so that no way of making a device lets a host or user
        # reach ssh's command line as an option.
        refuse_option_like(self.uri, "host", self.host)
        if self.user is not None:
            refuse_option_like(self.uri, "user", self.user)

    @classmethod
    def from_uri(cls, uri: str, **options) -> SSHDevice:
        shown = redacted(uri)
        refuse_unsafe_characters(uri)
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as e:
            raise ConfigError(f"{shown!r}: not a valid URI ({e}); write ssh://[user@]host[:port].") from e
        if parts.scheme != "ssh" or not parts.hostname:
            raise ConfigError(f"{shown!r} is not an SSH device; write ssh://[user@]host[:port].")
        if parts.password is not None:
            raise ConfigError(
                f"{shown!r}: edgekd takes no password in a device URI (it would sit in devices.yaml and "
                f"never be used: ssh runs in batch mode). Log in with a key: ssh-copy-id "
                f"{parts.username or 'USER'}@{parts.hostname}, then ssh-agent or an IdentityFile in "
                "~/.ssh/config; and write the URI without the password."
            )
        return cls(parts.hostname, parts.username, port, **options)

    @property
    def uri(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"ssh://{user}{self.host}{port}"

    def _ssh(self, command: str) -> list[str]:
        args = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout_s}"]
        if self.ssh_config is not None:
            args += ["-F", str(self.ssh_config)]
        if self.port:
            args += ["-p", str(self.port)]
        if self.user is not None:
            args += ["-l", self.user]
        # "--" ends ssh's options: whatever the host is, every OpenSSH reads it as the destination.
        return [*args, "--", self.host, command]

    def run(
        self, command: str, *, timeout_s: float, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess:
        """`command` in the device's shell; connection and login failures raise `DeviceError`."""
        try:
            done = subprocess.run(self._ssh(command), input=stdin, capture_output=True, timeout=timeout_s)
        except FileNotFoundError as e:
            raise DeviceError("the OpenSSH client (ssh) is not installed on this machine.") from e
        except subprocess.TimeoutExpired as e:
            raise DeviceError(
                f"{self.uri}: no answer within {timeout_s:g} s (running {command.split()[0]})."
            ) from e
        # ssh exits 255 both for its own failures and when the remote command dies of a signal;
        # only the first kind leaves ssh's own message on stderr.
        failure = self._ssh_failure(done.stderr.decode(errors="replace")) if done.returncode == 255 else None
        if failure:
            raise DeviceError(failure)
        return done

    def _ssh_failure(self, stderr: str) -> str | None:
        message = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        if "Permission denied" in stderr:
            return (
                f"{self.uri}: authentication failed ({message}); check that your key is in the device's "
                "authorized_keys and loaded (ssh-add), or name it in ~/.ssh/config."
            )
        if "Host key verification failed" in stderr or "REMOTE HOST IDENTIFICATION HAS CHANGED" in stderr:
            return (
                f"{self.uri}: the host key is unknown or changed ({message}); connect once with ssh to "
                "check and accept it. edgekd does not accept host keys itself."
            )
        if any(sign in stderr for sign in UNREACHABLE):
            return f"{self.uri}: unreachable ({message})."
        own = [line for line in stderr.splitlines() if line.startswith("ssh: ")]
        return f"{self.uri}: ssh failed ({own[-1]})." if own else None

    def check(self, *, timeout_s: float = 60) -> dict:
        """Reachability and what the device has: its fingerprint and runtime versions."""
        with _RemoteWorkspace(self, timeout_s) as remote:
            done = self.run(f"{shlex.quote(self.python)} {remote}/bench.py --check", timeout_s=timeout_s)
            return self._json(done, "check")["fingerprint"]

    def profile(self, artifact: Path, settings: ProfileSettings | None = None) -> Measurement:
        settings = settings or ProfileSettings()
        artifact = Path(artifact)
        artifact_format(artifact)  # a path that cannot be an artifact fails before the device is contacted
        with _RemoteWorkspace(self, settings.timeout_s, artifact) as remote:
            command = " ".join(
                [
                    "exec",
                    shlex.quote(self.python),
                    f"{remote}/bench.py",
                    shlex.quote(f"{remote}/{artifact.name}"),
                    f"--threads {settings.threads} --runs {settings.runs} --warmup {settings.warmup}",
                    f"--min-seconds {settings.min_seconds:g}",
                    f"--compute-units {shlex.quote(settings.compute_units)}",
                ]
            )
            result = self._json(self.run(command, timeout_s=settings.timeout_s), artifact.name)
        return Measurement(
            self.uri,
            artifact.name,
            latency_from_bench(result, f"{result['fingerprint']['cpu']} ({self.uri})"),
            result["fingerprint"],
            result["throttled"],
            layers=tuple(result["layers"]),
        )

    def _json(self, done: subprocess.CompletedProcess, what: str) -> dict:
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace").strip()
        try:
            result = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
        except json.JSONDecodeError:
            result = None
        if done.returncode == MISSING_RUNTIME_EXIT and result:
            packages = result["packages"]
            raise DeviceError(
                f"{self.uri}: {result['message']}. Install it on the device: {self.python} -m pip install "
                f"{packages[0]}" + (f" (or {', '.join(packages[1:])})" if len(packages) > 1 else "") + "."
            )
        if done.returncode == 127:
            raise DeviceError(
                f"{self.uri}: {self.python} was not found there ({err}); name the device's Python."
            )
        if done.returncode != 0 or result is None:
            if done.returncode < 0:
                how = f"stopped: the local ssh client was killed (signal {-done.returncode})"
            elif done.returncode == 255:  # ssh's code for a remote command that died of a signal
                how = "was killed on the device (or the connection dropped)"
            elif done.returncode > 128:
                how = f"was killed (signal {done.returncode - 128})"
            else:
                how = f"failed (exit {done.returncode})"
            detail = one_line((result or {}).get("message") or err[-500:] or "no output", limit=500)
            raise DeviceError(f"{self.uri}: the bench of {what} {how}: {detail}")
        return result


class _RemoteWorkspace:
    """A temporary directory on the device holding the bench script (and the artifact with its
    companion files); on exit, whatever runs from it is stopped and the directory removed."""

    def __init__(self, device: SSHDevice, timeout_s: float, artifact: Path | None = None) -> None:
        self.device, self.timeout_s, self.artifact = device, timeout_s, artifact
        self.path: str | None = None

    def __enter__(self) -> str:
        done = self.device.run(f'mktemp -d "${{TMPDIR:-/tmp}}/{REMOTE_PREFIX}XXXXXX"', timeout_s=60)
        path = done.stdout.decode().strip()
        if done.returncode != 0 or not re.fullmatch(rf"/\S*/{re.escape(REMOTE_PREFIX)}\w+", path):
            raise DeviceError(
                f"{self.device.uri}: cannot create a temporary directory ({done.stderr.decode()})."
            )
        self.path = path
        try:
            extracted = self.device.run(
                f"tar -x -C {shlex.quote(path)}", timeout_s=max(60, self.timeout_s), stdin=self._payload()
            )
            if extracted.returncode != 0:
                raise DeviceError(f"{self.device.uri}: copying failed: {extracted.stderr.decode().strip()}")
        except BaseException:
            self._remove()
            raise
        return path

    def _payload(self) -> bytes:
        from edgekd.artifact import companion_files

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(BENCH_SCRIPT, arcname="bench.py")
            if self.artifact is not None:  # checked by artifact_format before the device was contacted
                for path in [self.artifact, *companion_files(self.artifact)]:
                    tar.add(path, arcname=path.name)
        return buffer.getvalue()

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self._remove()
        except DeviceError:
            if kind is None:
                raise
            log.warning("could not remove %s on %s after: %s", self.path, self.device.uri, error)

    def _remove(self) -> None:
        if self.path is None:
            return
        path, self.path = self.path, None
        # A bench still running (Ctrl-C here, a timeout) is stopped first, so nothing outlives the run.
        # The pattern brackets one letter so that it does not match the shell that runs pkill itself
        # (and rm goes in its own call, whose command line would match).
        head, name = path.rsplit("/", 1)
        self.device.run(f"pkill -f {shlex.quote(f'{head}/[{name[0]}]{name[1:]}')}", timeout_s=60)
        done = self.device.run(f"rm -rf {shlex.quote(path)}", timeout_s=60)
        if done.returncode != 0:
            raise DeviceError(f"{self.device.uri}: could not remove {path}: {done.stderr.decode().strip()}")
