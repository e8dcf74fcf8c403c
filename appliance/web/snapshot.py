"""`leat-scanner snapshot`: save the camera's current frame for support.

While `leat-scanner run` runs, it owns the camera (libcamera opens a camera for one process
at a time), so the command asks the daemon over a Unix socket in the state directory
(`snapshot.sock`, mode 0600: the service user and root only); the daemon takes the next
frame through the preview tap and saves it where the page's "Save frame" does. When no
daemon answers, the command opens the camera itself, reads a few frames (the first ones
may be under-exposed while the camera's automatic exposure settles) and saves the last.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from pathlib import Path

from appliance.camera import open_source
from appliance.config import Config
from appliance.errors import ApplianceError, CameraError
from appliance.web.frames import save_frame
from appliance.web.preview import PreviewTap

log = logging.getLogger(__name__)

SOCKET_NAME = "snapshot.sock"
REQUEST = b"snapshot\n"
TIMEOUT_S = 5.0  # for each side of the socket, and for a frame
SETTLE_FRAMES = 8  # frames read before the one saved when the command opens the camera


class SnapshotError(ApplianceError):
    """No frame could be saved."""


def socket_path(cfg: Config) -> Path:
    """Where the daemon listens for `leat-scanner snapshot`."""
    return cfg.device.state_dir / SOCKET_NAME


def frames_dir(cfg: Config) -> Path:
    """Where saved frames go (`web.frames_dir`, default `<state_dir>/frames`)."""
    return cfg.web.frames_dir or cfg.device.state_dir / "frames"


class SnapshotServer:
    """The daemon's side: one request at a time on a Unix socket."""

    def __init__(self, cfg: Config, tap: PreviewTap) -> None:
        self._path = socket_path(cfg)
        self._folder = frames_dir(cfg)
        self._keep_s = cfg.web.frames_keep_h * 3600
        self._tap = tap
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()  # left by a process that was killed
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(self._path))
        os.chmod(self._path, 0o600)
        self._sock.listen(2)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="snapshot", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop listening and remove the socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT_S)
                try:
                    conn.sendall(json.dumps(self._answer(conn)).encode() + b"\n")
                except OSError as exc:
                    log.warning("snapshot: the client went away: %s", exc)

    def _answer(self, conn: socket.socket) -> dict[str, str]:
        try:
            if conn.recv(len(REQUEST)) != REQUEST:
                return {"error": "unknown request"}
        except OSError as exc:
            return {"error": f"no request: {exc}"}
        frame = self._tap.fresh_frame(TIMEOUT_S)
        if frame is None:
            return {"error": f"no frame from the camera for {TIMEOUT_S:g} s "
                             "(see the camera in `state` or the page)"}
        try:
            return {"saved": str(save_frame(frame.pixels, self._folder, self._keep_s))}
        except OSError as exc:
            return {"error": f"cannot save in {self._folder}: {exc}"}


def snapshot(cfg: Config) -> Path:
    """Ask the running daemon for a frame, else read the camera here; the saved file."""
    try:
        return _ask_daemon(socket_path(cfg))
    except (FileNotFoundError, ConnectionRefusedError):
        log.info("no running daemon answers on %s: reading the camera here", socket_path(cfg))
    except PermissionError:
        raise SnapshotError(f"{socket_path(cfg)}: permission denied: run as the service user "
                            "(sudo -u leat-scanner leat-scanner snapshot) or root") from None
    return _from_camera(cfg)


def _ask_daemon(path: Path) -> Path:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S * 2)
        sock.connect(str(path))
        try:
            sock.sendall(REQUEST)
            answer = sock.makefile("rb").readline(4096)
        except OSError as exc:
            raise SnapshotError(f"the daemon did not answer on {path}: {exc}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise SnapshotError(f"unexpected answer from the daemon on {path}") from None
    if "saved" not in reply:
        raise SnapshotError(f"the daemon could not save a frame: {reply.get('error')}")
    return Path(reply["saved"])


def _from_camera(cfg: Config) -> Path:
    try:
        source = open_source(cfg.camera)
    except CameraError as exc:
        raise SnapshotError(f"{exc} (is `leat-scanner run` running without its snapshot "
                            "socket? stop it, or use the page's Save frame)") from None
    try:
        frame = None
        for _ in range(SETTLE_FRAMES if cfg.camera.source == "picamera" else 1):
            frame = source.read() or frame
    finally:
        source.close()
    if frame is None:
        raise SnapshotError("the camera gave no frame")
    return save_frame(frame.pixels, frames_dir(cfg), cfg.web.frames_keep_h * 3600)
