"""The technician's page over HTTP(S): the standard library's ThreadingHTTPServer, bounded.

Bounds (a slow or hostile client must not hold the device): at most `MAX_CONNECTIONS`
connections at once (more are closed at accept), each read waits at most `READ_TIMEOUT_S`
and a connection lives at most `CONNECTION_DEADLINE_S` (then it is shut down); request
bodies at most `MAX_BODY` bytes; one request per connection (HTTP/1.0). The preview is
encoded at most `PREVIEW_FPS` times a second whatever the number of viewers, and at most
`web.max_viewers` viewers are served. docs/web.md has the security model.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from appliance import __version__
from appliance.config import LOOPBACK_HOSTS, CameraConfig, Config, read_secret
from appliance.errors import ConfigError
from appliance.feedback import Signal
from appliance.web.auth import Guard, Session, TooManyAttempts, csrf_ok
from appliance.web.frames import prune, save_frame
from appliance.web.hints import frame_hints
from appliance.web.preview import PreviewTap, TooManyViewers, render_jpeg

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 8
READ_TIMEOUT_S = 5.0
CONNECTION_DEADLINE_S = 15.0
MAX_BODY = 4096
PREVIEW_FPS = 5.0
HOUSEKEEPING_S = 1.0
PRUNE_EVERY_S = 600.0
COOKIE = "leat_session"
TEST_SIGNALS = {"accepted": Signal.ACCEPTED, "denied": Signal.DENIED}
STATIC = {  # file -> content type: everything the page loads, shipped in the package
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "index.html": "text/html; charset=utf-8",
    "login.html": "text/html; charset=utf-8",
    "login.js": "text/javascript; charset=utf-8",
}
CSP = ("default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class Device(Protocol):
    """What the page needs from the running scanner (`appliance.daemon.ScanService`)."""

    device_id: str

    @property
    def last_state(self) -> Mapping[str, Any] | None:
        """The last `state` payload computed for MQTT (None before the first)."""

    def play(self, signal: Signal) -> None:
        """Show `signal` on the LEDs and buzzer."""


@dataclass(frozen=True)
class WebSettings:
    """What the page serves with, resolved from the config (secrets read once)."""

    host: str
    port: int
    password: str | None
    tls: ssl.SSLContext | None
    frames_dir: Path
    keep_s: float
    max_viewers: int
    camera: CameraConfig

    @classmethod
    def from_config(cls, cfg: Config) -> WebSettings:
        """Resolve `cfg.web`: the password (required on the LAN) and the TLS certificate."""
        web = cfg.web
        password = read_secret("web-password", web.password_file)
        if web.lan and password is None:
            raise ConfigError(["web.lan: the page on the LAN needs a password "
                               "(web.password_file or the credential web-password)"])
        cert, key = web.cert_file, web.key_file
        if cert is None and cfg.mqtt.tls.cert_file and cfg.mqtt.tls.key_file:
            cert, key = cfg.mqtt.tls.cert_file, cfg.mqtt.tls.key_file
        tls = None
        if cert is not None and key is not None:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.minimum_version = ssl.TLSVersion.TLSv1_2
            try:
                tls.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError([f"web: cannot load the TLS certificate {cert}: {exc}"]) from None
        return cls(web.host, web.port, password, tls,
                   web.frames_dir or cfg.device.state_dir / "frames", web.frames_keep_h * 3600,
                   web.max_viewers, cfg.camera)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a cap on connections and a deadline for each."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], page: WebPage) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.page = page
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._open: dict[socket.socket, float] = {}
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("web: %d connections open, one more refused", MAX_CONNECTIONS)
            self.shutdown_request(request)
            return
        with self._open_lock:
            self._open[request] = time.monotonic()
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done(request)

    def _done(self, request: socket.socket) -> None:
        with self._open_lock:
            if self._open.pop(request, None) is not None:
                self._slots.release()

    def overdue(self) -> None:
        """Shut down connections open longer than `CONNECTION_DEADLINE_S` (their reads end)."""
        now = time.monotonic()
        with self._open_lock:
            late = [s for s, at in self._open.items() if now - at > CONNECTION_DEADLINE_S]
        for sock in late:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("web: request from %s failed", client_address[0], exc_info=True)


class WebPage:
    """The page's server, its housekeeping thread and the preview tap it gives the device."""

    def __init__(self, settings: WebSettings, device: Device, tap: PreviewTap) -> None:
        self.settings = settings
        self.device = device
        self.tap = tap
        self.guard = Guard(settings.password)
        self.started = time.monotonic()
        self._render_lock = threading.Lock()
        self._rendered: tuple[int, float, bytes, dict[str, Any]] | None = None
        self._stop = threading.Event()
        self._server = _Server((settings.host, settings.port), self)
        if settings.tls is not None:  # the handshake happens in the request's own thread
            self._server.socket = settings.tls.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, args=(0.5,), name="web",
                             daemon=True),
            threading.Thread(target=self._housekeeping, name="web-housekeeping", daemon=True),
        ]

    @property
    def url(self) -> str:
        """Where the page is served."""
        host, port = self._server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"{'https' if self.settings.tls else 'http'}://{shown}:{port}/"

    def start(self) -> WebPage:
        """Serve in the background."""
        for thread in self._threads:
            thread.start()
        log.info("technician page on %s%s", self.url,
                 "" if self.guard.password_required else " (no password: loopback only)")
        return self

    def close(self) -> None:
        """Stop serving (idempotent)."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _housekeeping(self) -> None:
        next_prune = time.monotonic()
        while not self._stop.wait(HOUSEKEEPING_S):
            self._server.overdue()
            if time.monotonic() >= next_prune:
                prune(self.settings.frames_dir, self.settings.keep_s)
                next_prune = time.monotonic() + PRUNE_EVERY_S

    # ------------------------------------------------------------------------- content

    def rendered(self) -> tuple[int, bytes, dict[str, Any]] | None:
        """The newest frame as (sequence, JPEG, aim facts), encoded at most `PREVIEW_FPS`
        times a second and shared by every viewer."""
        latest = self.tap.latest()
        if latest is None:
            return None
        frame, result = latest
        with self._render_lock:
            now = time.monotonic()
            cached = self._rendered
            if cached is not None and (cached[0] == frame.sequence
                                       or now - cached[1] < 1.0 / PREVIEW_FPS):
                return cached[0], cached[2], cached[3]
            height, width = frame.pixels.shape
            facts = {
                "sequence": frame.sequence,
                "size": [width, height],
                "codes_in_frame": len(result.scans),
                "hints": [{"code": h.code, "text": h.text} for h in
                          frame_hints(frame.pixels, [s.position for s in result.scans])],
                # what the sensor used for this frame (None for replayed frames)
                "exposure": None if frame.exposure is None else asdict(frame.exposure),
            }
            self._rendered = (frame.sequence, now, render_jpeg(frame, result), facts)
            return frame.sequence, self._rendered[2], facts

    def aim(self) -> dict[str, Any]:
        """The aim panel's facts: frame, read/refused, hints, the camera settings in use."""
        found = self.rendered()
        cam = self.settings.camera
        facts: dict[str, Any] = {"frame": None if found is None else found[2]}
        facts |= self.tap.seen()
        facts["camera"] = {  # configured values; the frame's `exposure` has the ones in use
            "source": cam.source, "fps": cam.fps, "autofocus": cam.autofocus,
            "lens_position": cam.lens_position if cam.autofocus == "manual" else None,
            "max_exposure_us": cam.max_exposure_us, "ev": cam.ev,
        }
        return facts

    def health(self) -> dict[str, Any]:
        """The `state` payload the device last published, plus version and uptime."""
        return {"device_id": self.device.device_id, "version": __version__,
                "uptime_s": round(time.monotonic() - self.started),
                "state": self.device.last_state}

    def save(self) -> Path | None:
        """Save the frame the viewer sees now; None before the first frame."""
        latest = self.tap.latest()
        if latest is None:
            return None
        return save_frame(latest[0].pixels, self.settings.frames_dir, self.settings.keep_s)


def _loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(BaseHTTPRequestHandler):
    """One request: route, check the session (and CSRF on POST), answer."""

    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "leat-scanner"
    sys_version = ""
    timeout = READ_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web %s: %s", self.client_address[0], format % args)

    @property
    def page(self) -> WebPage:
        return self.server.page

    # ------------------------------------------------------------------------ dispatch

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        if path == "/login":
            self._static("login.html")
            return
        if path.startswith("/static/"):
            self._static(path.removeprefix("/static/"))
            return
        found = self._session(create=path == "/")
        if found is None:
            if path == "/":
                self._redirect("/login")
            else:
                self._json({"error": "log in first"}, HTTPStatus.UNAUTHORIZED)
            return
        if path == "/":
            self._static("index.html")
        elif path == "/api/session":
            self._json({"csrf": found.csrf, "device_id": self.page.device.device_id,
                        "login": self.page.guard.password_required})
        elif path == "/api/health":
            self._json(self.page.health())
        elif path == "/api/aim":
            if self._watch(found):
                self._json(self.page.aim())
        elif path == "/preview.jpg":
            if self._watch(found):
                rendered = self.page.rendered()
                if rendered is None:
                    self._json({"error": "no frame yet"}, HTTPStatus.SERVICE_UNAVAILABLE)
                else:
                    self._send(HTTPStatus.OK, "image/jpeg", rendered[1])
        else:
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        body = self._body()
        if body is None:
            return
        if path == "/login":
            self._login(body)
            return
        found = self._session(create=False)
        if found is None:
            self._json({"error": "log in first"}, HTTPStatus.UNAUTHORIZED)
            return
        if not self._same_origin() or not csrf_ok(found, self.headers.get("X-CSRF-Token")):
            self._json({"error": "missing or wrong CSRF token"}, HTTPStatus.FORBIDDEN)
            return
        if path == "/api/save-frame":
            saved = self.page.save()
            if saved is None:
                self._json({"error": "no frame yet: open the preview first"},
                           HTTPStatus.SERVICE_UNAVAILABLE)
            else:
                self._json({"saved": saved.name, "folder": str(saved.parent)})
        elif path == "/api/test-scan":
            name = parse_qs(body.decode("ascii", "replace")).get("signal", ["accepted"])[0]
            signal = TEST_SIGNALS.get(name)
            if signal is None:
                self._json({"error": f"signal must be one of {sorted(TEST_SIGNALS)}"},
                           HTTPStatus.BAD_REQUEST)
                return
            self.page.device.play(signal)
            self._json({"played": signal.value})
        else:
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    # ------------------------------------------------------------------------- helpers

    def _host_ok(self) -> bool:
        """Without a password, only loopback Host names (no DNS rebinding to the device)."""
        if self.page.guard.password_required:
            return True
        host = urlsplit(f"//{self.headers.get('Host', '')}").hostname or ""
        if _loopback(host):
            return True
        self._json({"error": "this page answers on localhost only"}, HTTPStatus.FORBIDDEN)
        return False

    def _same_origin(self) -> bool:
        origin = self.headers.get("Origin")
        return origin is None or urlsplit(origin).netloc == self.headers.get("Host")

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._json({"error": f"a body of 0 to {MAX_BODY} bytes is accepted"},
                       HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return None
        return self.rfile.read(length) if length else b""

    def _session(self, create: bool) -> Session | None:
        token = None
        try:
            morsel = SimpleCookie(self.headers.get("Cookie", "")).get(COOKIE)
            token = None if morsel is None else morsel.value
        except CookieError:
            pass
        found = self.page.guard.session(token)
        if found is None and create and not self.page.guard.password_required:
            found = self.page.guard.open_session()
            self._new_cookie = found.token
        return found

    def _login(self, body: bytes) -> None:
        if not self.page.guard.password_required:
            self._redirect("/")
            return
        password = parse_qs(body.decode("utf-8", "replace")).get("password", [""])[0]
        try:
            found = self.page.guard.login(self.client_address[0], password)
        except TooManyAttempts as exc:
            log.warning("web: login refused for %s: %s", self.client_address[0], exc)
            self._redirect("/login?refused=wait", retry_after=exc.retry_after_s)
            return
        if found is None:
            log.warning("web: wrong password from %s", self.client_address[0])
            self._redirect("/login?refused=password")
            return
        self._new_cookie = found.token
        self._redirect("/")

    def _watch(self, found: Session) -> bool:
        try:
            self.page.tap.watch(found.token)
        except TooManyViewers as exc:
            self._json({"error": str(exc)}, HTTPStatus.SERVICE_UNAVAILABLE)
            return False
        return True

    def _static(self, name: str) -> None:
        kind = STATIC.get(name)
        if kind is None:
            self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)
            return
        data = resources.files("appliance.web").joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, kind, data)

    def _redirect(self, where: str, retry_after: float | None = None) -> None:
        extra = {"Location": where}
        if retry_after is not None:
            extra["Retry-After"] = str(max(1, round(retry_after)))
        self._send(HTTPStatus.SEE_OTHER, "text/plain; charset=utf-8", b"", extra)

    def _json(self, payload: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, "application/json", json.dumps(payload).encode())

    def _send(self, status: HTTPStatus, kind: str, data: bytes,
              extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        token = getattr(self, "_new_cookie", None)
        if token is not None:
            secure = "; Secure" if self.page.settings.tls is not None else ""
            self.send_header("Set-Cookie", f"{COOKIE}={token}; Path=/; HttpOnly; "
                                           f"SameSite=Strict{secure}")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def end_headers(self) -> None:
        """Every answer, the base class's error pages included, carries these."""
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        super().end_headers()


def start_page(cfg: Config, device: Device, tap: PreviewTap) -> WebPage | None:
    """Serve the page for `device` as `cfg.web` says. A port that cannot be had is logged and
    the scanner runs without its page (scanning matters more); ConfigError for bad settings."""
    settings = WebSettings.from_config(cfg)
    try:
        page = WebPage(settings, device, tap)
    except OSError as exc:
        log.error("web: cannot listen on %s:%d: %s; the scanner runs without its page "
                  "(web.port, or web.enabled = false)", settings.host, settings.port,
                  exc.strerror or exc)
        return None
    return page.start()
