"""`LeatHttp`: one pooled httpx.Client to the Leat REST API, its authentication, and the
mapping of every answer onto the exception tree (client.py holds the calls themselves).

Authentication is a personal access token, or else OAuth client credentials: the access
token from `POST /oauth/token` is cached until `expires_in` minus a margin, fetched again
once when a call gets HTTP 401, and the call repeated once (a 401 means nothing was done).

Errors (docs/leat-assumptions.md, E1-E4; Leat's `code` in the body decides, not only the status):

    HTTP / transport                        raises
    2xx with `data`                         (the parsed result)
    2xx without `data`, not JSON, bad field LeatUnavailable("malformed response ...", ambiguous)
    401 (after one token refresh for OAuth) LeatAuthError
    503 maintenance                         LeatUnavailable(retry_after)
    429                                     LeatUnavailable(retry_after = Retry-After s or date)
    other 5xx                               LeatUnavailable(ambiguous=True)
    4xx with {code, message}                LeatRejected(code, message, status)
    other 4xx                               LeatRejected(0, ..., status)
    connect error / connect timeout         LeatUnavailable(ambiguous=False): nothing was sent
    read timeout, reset, protocol error     LeatUnavailable(ambiguous=True): it may have happened
    a body slower than ANSWER_TIME_FACTOR x timeout_s in all, or over MAX_ANSWER_BYTES
                                            LeatUnavailable(ambiguous=True): the same

httpx's timeouts bound each socket operation, not a call: an answer dripped a byte at a
time inside `timeout_s` each (a proxy, a middlebox) would hold a worker for as long as it
lasts, so the body is read in chunks against a deadline and a size bound.

Thread-safe: httpx.Client is, and the OAuth token cache is guarded by a lock. This is the
only module that imports httpx at run time. Tokens, secrets and e-mail addresses are never
logged.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Final

import httpx

from appliance import __version__
from appliance.errors import LeatAuthError, LeatError, LeatRejected, LeatUnavailable
from appliance.leat.fields import Fields, malformed

log = logging.getLogger(__name__)

API_PREFIX: Final = "/api/v3/oauth/clients"
TOKEN_PATH: Final = "/oauth/token"  # noqa: S105 - a path; no /api prefix (Leat's OAuth docs)
TOKEN_MARGIN_S: Final = 60.0  # refetch this long before `expires_in` runs out
MAX_ANSWER_BYTES: Final = 8 * 1024 * 1024  # far above any answer Leat documents
ANSWER_TIME_FACTOR: Final = 2.0  # a whole answer within this many `timeout_s` of sending
MAX_ERROR_FIELDS: Final = 32  # `errors` fields kept from one error body
MAX_ERROR_TEXTS: Final = 8  # texts kept per field
MAX_ERROR_TEXT: Final = 500  # characters kept per text

_NOTHING_SENT = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
)


class LeatHttp:
    """Authenticated requests to Leat; `request` gives the `data` of an answer or raises."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None,
        client_id: str | None,
        client_secret: str | None,
        timeout_s: float,
        transport: httpx.BaseTransport | None,
        clock: Callable[[], float],
    ) -> None:
        self._static_token = token or None
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._lock = threading.Lock()
        self._oauth_token: str | None = None
        self._oauth_expires_at: float | None = None
        self._answer_s = ANSWER_TIME_FACTOR * timeout_s
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(
                connect=timeout_s, read=timeout_s, write=timeout_s, pool=timeout_s
            ),
            headers={"Accept": "application/json", "User-Agent": f"leat-scanner/{__version__}"},
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=4),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, object] | None = None,
        body: Mapping[str, object] | None = None,
    ) -> object:
        """`data` of one API call; with OAuth, a 401 refetches the token and retries once."""
        url = API_PREFIX + path
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        payload = None if body is None else {k: v for k, v in body.items() if v is not None}
        token = self._bearer()
        response = self._send(method, url, query, payload, token)
        if response.status_code == httpx.codes.UNAUTHORIZED and self._static_token is None:
            log.info("Leat refused the OAuth access token; fetching a new one")
            self._forget(token)
            response = self._send(method, url, query, payload, self._bearer())
        return _data(response, method, url)

    def _send(
        self,
        method: str,
        url: str,
        query: Mapping[str, str] | None,
        payload: Mapping[str, object] | None,
        token: str | None,
    ) -> httpx.Response:
        """One HTTP exchange; transport failures become `LeatUnavailable`."""
        headers = {"Authorization": f"Bearer {token}"} if token else None
        started = time.monotonic()
        try:
            with self._http.stream(
                method, url, params=query or None, json=payload, headers=headers
            ) as streamed:
                body = self._body(streamed, started, method, url)
            response = httpx.Response(streamed.status_code, headers=streamed.headers,
                                      content=body, request=streamed.request)
        except _NOTHING_SENT as exc:
            log.info("Leat %s %s: not reachable (%s)", method, url, type(exc).__name__)
            raise LeatUnavailable(
                f"Leat not reachable ({type(exc).__name__}) on {method} {url}", ambiguous=False
            ) from exc
        except httpx.TransportError as exc:
            log.info("Leat %s %s: no answer (%s)", method, url, type(exc).__name__)
            raise LeatUnavailable(
                f"no answer from Leat ({type(exc).__name__}) on {method} {url}", ambiguous=True
            ) from exc
        log.debug(
            "Leat %s %s -> %d in %.0f ms",
            method,
            url,
            response.status_code,
            (time.monotonic() - started) * 1000,
        )
        return response

    def _body(self, response: httpx.Response, started: float, method: str, url: str) -> bytes:
        """The whole body of `response`, read against the call's deadline and size bound."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise LeatUnavailable(f"Leat's answer to {method} {url} is over "
                                      f"{MAX_ANSWER_BYTES} bytes", ambiguous=True)
            if time.monotonic() - started > self._answer_s:
                raise LeatUnavailable(f"Leat's answer to {method} {url} took over "
                                      f"{self._answer_s:.0f} s", ambiguous=True)
            chunks.append(chunk)
        return b"".join(chunks)

    def _bearer(self) -> str:
        """The access token to send: the static one, or a cached/fresh OAuth token."""
        if self._static_token is not None:
            return self._static_token
        with self._lock:
            now = self._clock()
            expired = self._oauth_expires_at is not None and now >= self._oauth_expires_at
            if self._oauth_token is None or expired:
                self._oauth_token, lifetime = self._fetch_token()
                self._oauth_expires_at = (
                    None
                    if lifetime is None
                    else now + lifetime - min(TOKEN_MARGIN_S, lifetime / 10)
                )
            return self._oauth_token

    def _forget(self, token: str) -> None:
        """Drop the cached OAuth token if it is still `token` (another thread may have renewed)."""
        with self._lock:
            if self._oauth_token == token:
                self._oauth_token = None

    def _fetch_token(self) -> tuple[str, float | None]:
        """A new OAuth access token and its lifetime in seconds (None when Leat omits it)."""
        body = {
            "grant_type": "client_credentials",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
        }
        response = self._send("POST", TOKEN_PATH, None, body, None)
        status = response.status_code
        if status in (400, 401, 403):
            raise LeatAuthError(f"Leat refused the OAuth client credentials (HTTP {status})")
        if not response.is_success:
            raise _error(response, "POST", TOKEN_PATH)
        try:
            raw = response.json()
        except ValueError as exc:
            raise malformed("oauth token (not JSON)") from exc
        fields = Fields(raw, "token")
        if not fields.has("access_token") and isinstance(raw.get("data"), dict):
            fields = fields.req_obj("data")
        token = fields.req_str("access_token")
        lifetime = fields.opt_int("expires_in")
        log.info("Leat OAuth access token fetched (expires in %s s)", lifetime)
        return token, None if lifetime is None else float(max(lifetime, 0))


def _param(value: object) -> str:
    """A query-string value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _data(response: httpx.Response, method: str, url: str) -> object:
    """The `data` of a successful response; otherwise the matching `LeatError` is raised."""
    if not response.is_success:
        raise _error(response, method, url)
    try:
        body = response.json()
    except ValueError as exc:
        raise malformed(f"{method} {url} (not JSON)") from exc
    if not isinstance(body, dict) or "data" not in body:
        raise malformed(f"{method} {url} (no data)")
    return body["data"]


def _error(response: httpx.Response, method: str, url: str) -> LeatError:
    """The error for a non-2xx response."""
    status = response.status_code
    where = f"{method} {url}"
    if status == httpx.codes.UNAUTHORIZED:
        log.warning("Leat refused our credentials on %s (HTTP 401)", where)
        return LeatAuthError(f"Leat refused our credentials (HTTP 401) on {where}")
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    if status == httpx.codes.SERVICE_UNAVAILABLE:
        log.warning("Leat is in maintenance (HTTP 503) on %s", where)
        return LeatUnavailable(f"Leat is in maintenance (HTTP 503) on {where}", retry_after)
    if status == httpx.codes.TOO_MANY_REQUESTS:
        log.warning("Leat rate limit (HTTP 429) on %s; retry after %s s", where, retry_after)
        return LeatUnavailable(f"Leat rate limit (HTTP 429) on {where}", retry_after)
    if status >= httpx.codes.INTERNAL_SERVER_ERROR:
        log.warning("Leat server error (HTTP %d) on %s", status, where)
        return LeatUnavailable(
            f"Leat server error (HTTP {status}) on {where}", retry_after, ambiguous=True
        )
    code, message, errors = _envelope(response)
    if 400 <= status < 500:
        # Leat messages may echo input (e-mail addresses), so only the code is logged.
        log.info("Leat rejected %s: code %s (HTTP %d)", where, code, status)
        return LeatRejected(code, message or f"HTTP {status} from Leat", status, errors)
    log.warning("unexpected HTTP %d from Leat on %s", status, where)
    return LeatUnavailable(f"unexpected HTTP {status} from Leat on {where}")


def _envelope(response: httpx.Response) -> tuple[int, str | None, dict[str, tuple[str, ...]]]:
    """Leat's `code` (0 when the body has none), `message` and `errors` of an error body.

    `errors` maps a field to its texts; Leat sends a list of strings or one string per field
    (the official PHP SDK's `Exceptions/Error.php` accepts both). At most `MAX_ERROR_FIELDS`
    fields of `MAX_ERROR_TEXTS` texts each are kept.
    """
    try:
        body = response.json()
    except ValueError:
        return 0, None, {}
    if not isinstance(body, dict):
        return 0, None, {}
    message = body.get("message")
    text = message if isinstance(message, str) else None
    errors = _field_errors(body.get("errors"))
    code = body.get("code")
    if isinstance(code, bool):
        return 0, text, errors
    if isinstance(code, int):
        return code, text, errors
    if isinstance(code, str) and code.strip().isdigit():
        return int(code), text, errors
    return 0, text, errors


def _field_errors(raw: object) -> dict[str, tuple[str, ...]]:
    """The `errors` object of an error body, bounded; anything malformed is dropped."""
    if not isinstance(raw, dict):
        return {}
    errors: dict[str, tuple[str, ...]] = {}
    for key, value in list(raw.items())[:MAX_ERROR_FIELDS]:
        texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        kept = tuple(t[:MAX_ERROR_TEXT] for t in texts[:MAX_ERROR_TEXTS] if isinstance(t, str))
        if kept:
            errors[str(key)[:MAX_ERROR_TEXT]] = kept
    return errors


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """A `Retry-After` header as seconds from now: delta-seconds or an HTTP date (not < 0)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)
