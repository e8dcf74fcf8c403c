"""A Leat-compatible HTTP server on loopback: seeded demo data, real state, fault injection.

It serves Leat's OAuth API at Leat's own paths (`/api/v3/oauth/clients/...`, `POST
/oauth/token`) so the appliance, its tests and POS integrators can work without a Leat
account, plus an unauthenticated control API under `/_sandbox/` (docs/sandbox.md).

Threads: a `ThreadingHTTPServer`, one thread per connection; every connection carries one
request (HTTP/1.0), so faults act on whole connections. All state changes happen under one
lock. Injected latency waits outside that lock and never blocks other requests.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import secrets
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from appliance.sandbox.faults import API_PREFIX, FAULT_FIELDS, Faults, FaultSet
from appliance.sandbox.input import Input, Page, SandboxError, nest_form, parse_body
from appliance.sandbox.seed import parse_seed, read_seed
from appliance.sandbox.state import ROUTES, State, handler

log = logging.getLogger(__name__)

TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a path, not a secret
CONTROL_PREFIX: Final = "/_sandbox"
MAX_BODY: Final = 1 << 20  # bigger bodies get HTTP 413
RATE_LIMIT: Final = 5000  # X-RateLimit-Limit, per 60-second window (never enforced)
RATE_WINDOW_S: Final = 60.0
MAX_ADVANCE_S: Final = 10 * 366 * 86400  # one advance_clock() step: at most ten years
_DRAIN_LIMIT = 16 << 20  # an oversized body up to this size is read (and dropped) before the 413

Clock = Callable[[], datetime]


# ---------------------------------------------------------------------------------- server


class LeatSandbox:
    """The sandbox server: `start()`, point a client at `url`, `stop()` (or use `with`)."""

    def __init__(
        self,
        seed: Path | Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token_lifetime_s: int | None = 3600,
        clock: Clock | None = None,
    ) -> None:
        self._seed_source = seed
        self._base_clock: Clock = clock or (lambda: datetime.now(UTC))
        self._offset = timedelta()  # advance_clock() moves the sandbox's time forward
        self._host, self._port = host, port
        self.token_lifetime_s = token_lifetime_s
        self.faults = Faults()
        self._lock = threading.Lock()  # guards the fields below (not the state)
        self._state = self._load()
        self._tokens: dict[str, datetime | None] = {}  # OAuth token -> expiry (None: never)
        self._requests: list[tuple[str, str]] = []
        self._answers: list[tuple[str, str, int]] = []
        self._rate_window = (time.monotonic(), 0)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def _clock(self) -> datetime:
        """The sandbox's time: the given clock plus every `advance_clock()`."""
        return self._base_clock() + self._offset

    def advance_clock(self, seconds: float) -> datetime:
        """Move the sandbox's time forward (locks, tokens and rewards expire); the new time."""
        if not 0 <= seconds <= MAX_ADVANCE_S:
            raise ValueError(f"advance_s must be a number from 0 to {MAX_ADVANCE_S}")
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self._clock()

    def _load(self) -> State:
        """Fresh state from the seed (a file is read again); `SeedError` if invalid."""
        seed = parse_seed(read_seed(self._seed_source))
        self.personal_access_token = seed.personal_access_token
        self.oauth_client_id, self.oauth_client_secret = next(iter(seed.oauth_clients.items()))
        self._oauth_clients = dict(seed.oauth_clients)
        return State(seed, self._clock)

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Bind and serve in a background thread."""
        if self._server is not None:
            return
        if not _is_loopback(self._host):
            log.warning("the Leat sandbox listens on %s: anyone who can reach it can change "
                        "its data and faults (no real security)", self._host)
        server_class = _Server6 if ":" in self._host else _Server
        self._stopping.clear()
        self._server = server_class((self._host, self._port), _Handler)
        self._server.sandbox = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
            name="leat-sandbox", daemon=True,
        )
        self._thread.start()
        log.info("Leat sandbox serving on %s", self.url)

    def stop(self) -> None:
        """Stop serving; waits for open requests (injected latency is cut short)."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join()
        server.server_close()  # joins the request threads
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL a client configures, e.g. `http://127.0.0.1:45123`."""
        if self._server is None:
            raise RuntimeError("the sandbox is not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    # ------------------------------------------------------------------- inspection

    def orders(self) -> list[dict[str, Any]]:
        """Recorded orders (oldest first) with `sandbox{processed, points, returned_points}`."""
        with self._state.lock:
            orders: list[dict[str, Any]] = _copy(self._state.orders.view())
        return orders

    def order_returns(self) -> list[dict[str, Any]]:
        """Recorded order returns (oldest first)."""
        with self._state.lock:
            returns: list[dict[str, Any]] = _copy(self._state.orders.returns)
        return returns

    def requests(self) -> list[tuple[str, str]]:
        """`(method, path)` of every API request read so far (control paths excluded)."""
        with self._lock:
            return list(self._requests)

    def answers(self) -> list[tuple[str, str, int]]:
        """`(method, path, HTTP status)` of every API answer sent so far (control excluded)."""
        with self._lock:
            return list(self._answers)

    def expire_tokens(self) -> None:
        """Revoke every issued OAuth access token (the personal access token stays): the
        next call with one gets HTTP 401."""
        with self._lock:
            self._tokens.clear()

    def reset(self) -> None:
        """Reload the seed (the file is read again); faults, tokens and the log stay."""
        state = self._load()
        with self._lock:
            self._state = state

    # ------------------------------------------------------------------- requests

    def _note(self, method: str, path: str) -> dict[str, str]:
        """Log an API request; its rate-limit headers."""
        now = time.monotonic()
        with self._lock:
            self._requests.append((method, path))
            start, count = self._rate_window
            if now - start >= RATE_WINDOW_S:
                start, count = now, 0
            self._rate_window = (start, count + 1)
        return {"X-RateLimit-Limit": str(RATE_LIMIT),
                "X-RateLimit-Remaining": str(max(RATE_LIMIT - count - 1, 0))}

    def _authorized(self, header: str | None) -> bool:
        scheme, _, token = (header or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        if secrets.compare_digest(token, self.personal_access_token):
            return True
        with self._lock:
            if token not in self._tokens:
                return False
            expires = self._tokens[token]
        return expires is None or self._clock() < expires

    def _issue_token(self, content_type: str, data: bytes) -> tuple[int, dict[str, Any]]:
        """`POST /oauth/token` (client credentials)."""
        try:
            form = parse_body(content_type, data)
        except SandboxError as exc:
            return 400, {"error": "invalid_request", "error_description": exc.message,
                         "message": exc.message}
        if form.get("grant_type") != "client_credentials":
            text = "The authorization grant type is not supported by the authorization server."
            return 400, {"error": "unsupported_grant_type", "error_description": text,
                         "message": text}
        client_id, secret = str(form.get("client_id", "")), form.get("client_secret")
        expected = self._oauth_clients.get(client_id)
        if expected is None or not isinstance(secret, str) or not secrets.compare_digest(
            secret, expected
        ):
            text = "Client authentication failed"
            return 401, {"error": "invalid_client", "error_description": text, "message": text}
        token = "sandbox-oauth-" + secrets.token_urlsafe(32)
        lifetime = self.token_lifetime_s
        with self._lock:
            self._tokens[token] = (None if lifetime is None
                                   else self._clock() + timedelta(seconds=lifetime))
        answer: dict[str, Any] = {"token_type": "Bearer", "access_token": token}
        if lifetime is not None:  # None: `expires_in` left out, as Leat's docs allow
            answer["expires_in"] = lifetime
        return 200, answer

    def _api(self, method: str, path: str, query: str, headers: Mapping[str, str], data: bytes
             ) -> tuple[int, dict[str, Any]]:
        """One API request (`headers` with lower-case names): HTTP status and JSON body."""
        if path.rstrip("/") == TOKEN_PATH:
            if method != "POST":
                return 405, {"message": f"The {method} method is not supported for this route."}
            return self._issue_token(headers.get("content-type", ""), data)
        if path != API_PREFIX and not path.startswith(API_PREFIX + "/"):
            return 404, {"message": f"Route not found: {path}"}
        found = _resolve(method, path[len(API_PREFIX):])
        if isinstance(found, int):
            return found, {"message": f"Route not found: {method} {path}" if found == 404
                           else f"The {method} method is not supported for this route."}
        name, args = found
        if not self._authorized(headers.get("authorization")):
            return 401, {"message": "Unauthenticated."}
        try:
            body = (parse_body(headers.get("content-type", ""), data)
                    if method in ("POST", "PUT", "PATCH") else {})
            params = nest_form(parse_qsl(query, keep_blank_values=True))
            with self._lock:
                state = self._state
            with state.lock:
                result = handler(state, name)(args, Input(params), Input(body))
                if isinstance(result, Page):
                    return 200, _copy(result.body())
                return 200, {"data": _copy(result), "meta": {}}
        except SandboxError as exc:
            return exc.status, exc.body()

    def _control(self, method: str, path: str, data: bytes) -> tuple[int, dict[str, Any]]:
        """The `/_sandbox/...` control API (no authentication)."""
        route = path[len(CONTROL_PREFIX):].rstrip("/")
        if route == "/faults" and method == "GET":
            return 200, {"faults": self.faults.current().as_dict()}
        if route == "/faults" and method == "DELETE":
            self.faults.clear()
            return 200, {"faults": self.faults.current().as_dict()}
        if route == "/faults" and method == "POST":
            try:
                fields = json.loads(data or b"{}")
                if not isinstance(fields, dict):
                    raise ValueError("the body must be a JSON object")
                unknown = sorted(set(fields) - set(FAULT_FIELDS))
                if unknown:
                    raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
                if isinstance(fields.get("only_paths"), list):
                    fields["only_paths"] = tuple(fields["only_paths"])
                self.faults.set(**fields)
            except ValueError as exc:  # also json.JSONDecodeError
                return 400, {"message": str(exc)}
            return 200, {"faults": self.faults.current().as_dict()}
        if route == "/clock" and method == "GET":
            return 200, {"now": self._clock().isoformat()}
        if route == "/clock" and method == "POST":
            try:
                fields = json.loads(data or b"{}")
                step = fields.get("advance_s") if isinstance(fields, dict) else None
                if isinstance(step, bool) or not isinstance(step, int | float):
                    raise ValueError("the body must be {\"advance_s\": <seconds>}")
                now = self.advance_clock(step)
            except ValueError as exc:  # also json.JSONDecodeError
                return 400, {"message": str(exc)}
            return 200, {"now": now.isoformat()}
        if route == "/orders" and method == "GET":
            return 200, {"orders": self.orders(), "order_returns": self.order_returns()}
        if route == "/requests" and method == "GET":
            return 200, {"requests": [list(r) for r in self.requests()]}
        if route == "/reset" and method == "POST":
            try:
                self.reset()
            except ValueError as exc:  # SeedError
                problems = getattr(exc, "problems", [str(exc)])
                return 400, {"message": "invalid seed; state unchanged", "problems": problems}
            return 200, {"reset": True}
        return 404, {"message": f"No control route {method} {path}"}


def _copy(value: Any) -> Any:
    """A deep, JSON-safe copy (responses never share objects with the state)."""
    return json.loads(json.dumps(value))


_COMPILED = [(method, pattern.split("/")[1:] if pattern else [], name)
             for method, pattern, name in ROUTES]


def _resolve(method: str, relative: str) -> tuple[str, tuple[str, ...]] | int:
    """The route name and path arguments for `relative`, else 404 or 405."""
    parts = [unquote(p) for p in relative.strip("/").split("/")] if relative.strip("/") else []
    allowed = False
    for route_method, pattern, name in _COMPILED:
        if len(pattern) != len(parts):
            continue
        args = []
        for want, got in zip(pattern, parts, strict=True):
            if want == "{}" and got:
                args.append(got)
            elif want != got:
                break
        else:
            if route_method == method:
                return name, tuple(args)
            allowed = True
    return 405 if allowed else 404


def _faultable(path: str) -> bool:
    """False for the control API, which faults never touch."""
    return not (path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class _Server(ThreadingHTTPServer):
    """The HTTP server; request threads are joined on close."""

    daemon_threads = True
    block_on_close = True
    sandbox: LeatSandbox


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    """One connection, one request."""

    server: _Server
    protocol_version = "HTTP/1.0"
    server_version = "LeatSandbox/1.0"
    timeout = 10  # seconds a silent client may hold a thread

    def handle(self) -> None:
        """Serve the connection, unless an outage resets it before anything is read."""
        self._answered = False
        faults = self.server.sandbox.faults
        if faults.current().outage and _faultable(path := self._peek_path()) and faults.take(
            path, outage=True
        ):
            log.info("sandbox outage: connection reset before reading it")
            self._answered = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            return
        super().handle()

    def _peek_path(self) -> str:
        """The request path, peeked at without consuming it ("" if not readable)."""
        try:
            head = self.connection.recv(4096, socket.MSG_PEEK)
        except OSError:
            return ""
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        path = parts[1].decode("latin-1") if len(parts) >= 2 else ""
        return urlsplit(path).path

    def do_GET(self) -> None:
        """Any method."""
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET  # noqa: N815

    def _serve(self) -> None:
        try:
            self._dispatch()
        except OSError as exc:  # the client went away (e.g. it timed out during latency)
            log.info("sandbox: %s %s: connection lost (%s)", self.command, self.path, exc)
        except Exception:
            log.exception("sandbox: %s %s failed", self.command, self.path)
            if not self._answered:
                with contextlib.suppress(OSError):
                    self._reply(500, {"message": "Internal error.", "code": 1000,
                                      "status_code": 500})

    def _dispatch(self) -> None:
        sandbox = self.server.sandbox
        split = urlsplit(self.path)
        path = split.path
        data = self._body()
        if data is None:
            return
        if not _faultable(path):
            self._reply(*sandbox._control(self.command, path, data))
            return
        headers = sandbox._note(self.command, path)
        fault = sandbox.faults.take(path)
        if fault is not None and (fault.rate_limit_retry_after is not None
                                  or fault.maintenance or fault.status):
            self._pause(fault)
            if fault.rate_limit_retry_after is not None:
                headers.update({"Retry-After": f"{fault.rate_limit_retry_after:g}",
                                "X-RateLimit-Remaining": "0"})
                self._reply(429, {"message": "Too Many Attempts."}, headers)
            elif fault.maintenance:
                self._reply(503, {"message": "Service Unavailable (maintenance)."}, headers)
            elif isinstance(fault.body, str):
                self._reply_text(fault.status or 500, fault.body, headers)
            else:
                status = fault.status or 500
                self._reply(status, fault.body or {"message": f"Simulated HTTP {status}.",
                                                   "code": 1000, "status_code": status}, headers)
            return
        headers_in = {k.lower(): v for k, v in self.headers.items()}
        status, body = sandbox._api(self.command, path, split.query, headers_in, data)
        if fault is not None and fault.drop_after_receive:
            log.info("sandbox fault: %s %s done, closing without an answer", self.command, path)
            self._answered = True
            self.close_connection = True
            return
        self._pause(fault)
        self._reply(status, body, headers)

    def _body(self) -> bytes | None:
        """The request body, or None when an error was already answered."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._reply(411, {"message": "Length Required: send a Content-Length."})
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._reply(400, {"message": "Invalid Content-Length.", "code": 1003,
                              "status_code": 400})
            return None
        if length > MAX_BODY:
            if length <= _DRAIN_LIMIT:
                while length > 0:
                    length -= len(self.rfile.read(min(length, 65536)) or b"\0" * length)
            self._reply(413, {"message": f"Request body larger than {MAX_BODY} bytes.",
                              "code": 1003, "status_code": 413})
            return None
        return self.rfile.read(length) if length else b""

    def _pause(self, fault: FaultSet | None) -> None:
        """Injected latency (cut short when the sandbox stops)."""
        if fault is not None and fault.latency_s:
            self.server.sandbox._stopping.wait(fault.latency_s)

    def _reply(self, status: int, body: Mapping[str, Any],
               headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body).encode("utf-8")
        self._answered = True
        self._note_answer(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if headers is None or "X-RateLimit-Limit" not in headers:
            self.send_header("X-RateLimit-Limit", str(RATE_LIMIT))
        self.end_headers()
        self.wfile.write(payload)

    def _reply_text(self, status: int, text: str, headers: Mapping[str, str]) -> None:
        """A non-JSON answer (an injected bare error page)."""
        payload = text.encode("utf-8")
        self._answered = True
        self._note_answer(status)
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _note_answer(self, status: int) -> None:
        """Log the status of an API answer (`LeatSandbox.answers`)."""
        path = urlsplit(self.path).path
        if _faultable(path):
            sandbox = self.server.sandbox
            with sandbox._lock:
                sandbox._answers.append((self.command, path, status))

    def log_message(self, format: str, *args: Any) -> None:
        """Access log to `logging` (debug), not stderr."""
        log.debug("sandbox %s - %s", self.address_string(), format % args)


# ----------------------------------------------------------------------------------- CLI


def serve(host: str, port: int, seed: Path | None) -> None:
    """Run the sandbox until SIGINT/SIGTERM (`leat-scanner sandbox`); prints how to use it."""
    sandbox = LeatSandbox(seed, host, port)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        sandbox.start()
        out = sys.stdout
        out.write(f"Leat sandbox on {sandbox.url}\n"
                  f"  API:      {sandbox.url}{API_PREFIX}/...\n"
                  f"  token:    {sandbox.personal_access_token} (personal access token)\n"
                  f"  OAuth:    client_id {sandbox.oauth_client_id}, client_secret "
                  f"{sandbox.oauth_client_secret} -> POST {sandbox.url}{TOKEN_PATH}\n"
                  f"  control:  {sandbox.url}{CONTROL_PREFIX}/faults | clock | orders | reset "
                  "(no authentication; see docs/sandbox.md)\n"
                  "Stop with Ctrl-C.\n")
        out.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sandbox.stop()
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["FaultSet", "Faults", "LeatSandbox", "serve"]
