"""A private Mosquitto on a free loopback port: for the demo (no broker configured), the
tests and the benchmarks. Persistence is off, so a restarted broker has forgotten retained
messages, as a real one without persistence would. Its packet size limit is the one
provisioning sets (systemd/mosquitto-leat.conf)."""

from __future__ import annotations

import getpass
import logging
import shutil
import socket
import subprocess
import threading
from pathlib import Path
from types import TracebackType

from appliance.bus import BROKER_MAX_PACKET_BYTES
from appliance.errors import BusError

log = logging.getLogger(__name__)

INSTALL_HINT = "mosquitto not installed; run scripts/bootstrap (or: apt-get install mosquitto)"
READY_LINE = " running"  # "mosquitto version 2.0.11 running", logged once listeners are open


class MosquittoMissingError(BusError):
    """No mosquitto binary on this machine."""


def _which(name: str) -> str | None:
    """`name` on PATH, or in the sbin folders Debian uses (often not on a user's PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/usr/bin")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LocalMosquitto:
    """A mosquitto process of our own on 127.0.0.1; `stop()`/`start()` keep the port."""

    host = "127.0.0.1"

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        *,
        max_packet_size: int = BROKER_MAX_PACKET_BYTES,
    ) -> None:
        binary = _which("mosquitto")
        if binary is None:
            raise MosquittoMissingError(INSTALL_HINT)
        self.binary = binary
        self.port = free_port(self.host)
        self.workdir = workdir
        self.log: list[str] = []
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "persistence false",
            "set_tcp_nodelay true",  # as provisioned: no Nagle delay on forwarded messages
            # A client sending a larger packet is disconnected; v5 clients are told the limit
            # in CONNACK (mosquitto.conf(5)). 0: no limit.
            f"max_packet_size {max_packet_size}" if max_packet_size else "",
            f"user {getpass.getuser()}",  # as root, mosquitto would switch to user mosquitto
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
        ]
        if users:
            lines += ["allow_anonymous false", f"password_file {self._password_file(users)}"]
        else:
            lines.append("allow_anonymous true")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def _password_file(self, users: dict[str, str]) -> Path:
        tool = _which("mosquitto_passwd")
        if tool is None:
            raise MosquittoMissingError(INSTALL_HINT)
        path = self.workdir / "passwords"
        path.touch(mode=0o600)
        for user, password in users.items():
            subprocess.run(  # noqa: S603 - fixed argv, no shell
                [tool, "-b", str(path), user, password], check=True, timeout=10
            )
        return path

    @property
    def running(self) -> bool:
        """True while the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker (again, on the same port) and wait until it listens."""
        if self.running:
            return
        self._ready.clear()
        self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            [self.binary, "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, args=(self._proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or not self.running:
            self.stop()
            raise BusError("mosquitto did not start:\n" + "\n".join(self.log[-20:]))
        log.debug("mosquitto listening on %s:%d", self.host, self.port)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.log.append(line.rstrip("\n"))
            if READY_LINE in line:
                self._ready.set()
        self._ready.set()  # EOF: the process ended; start() then reports its log

    def stop(self) -> None:
        """Stop the broker gracefully (SIGTERM)."""
        self._end(kill=False)

    def kill(self) -> None:
        """Kill the broker (SIGKILL), like a power cut."""
        self._end(kill=True)

    def _end(self, kill: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        else:
            # mosquitto 2.0 misses a SIGTERM that lands just after startup: send it again
            for _ in range(20):
                proc.terminate()
                try:
                    proc.wait(timeout=0.25)
                    break
                except subprocess.TimeoutExpired:
                    continue
            else:
                proc.kill()
        proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> LocalMosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
