"""The exception tree of the appliance.

    ApplianceError
    ├── ConfigError (also ValueError)   bad config: exit 2 with every problem listed
    ├── CameraError                     wraps picamera2 / image-reading failures
    ├── LeatError
    │   ├── LeatUnavailable             network, timeout, 5xx, 503 maintenance, 429 -> retry later
    │   ├── LeatRejected                Leat said no (code + message)
    │   └── LeatAuthError               401: our credentials are wrong
    ├── BusError                        MQTT connect/publish problems
    └── OutboxError                     durable queue refused or failed
        └── OutboxDamaged               a store that must not be used until a technician acts

Library errors are translated at the boundary module and chained (`raise ... from exc`).
"""

from __future__ import annotations

from collections.abc import Mapping


class ApplianceError(Exception):
    """Base of every error the appliance raises on purpose."""


class ConfigError(ApplianceError, ValueError):
    """The configuration is invalid; `problems` lists every problem with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.problems))


class CameraError(ApplianceError):
    """The frame source failed (camera missing, busy, or an unreadable image)."""


class LeatError(ApplianceError):
    """A Leat API call failed."""


class LeatUnavailable(LeatError):
    """Leat could not be reached or asked us to retry later (timeouts, 5xx, 503, 429).

    `retry_after` is Leat's Retry-After in seconds, if it sent one. `ambiguous` is True when
    the request may have been received and processed (read timeout, connection reset after
    sending, 5xx): a non-idempotent call must then be looked up before it is repeated.
    """

    def __init__(
        self, message: str, retry_after: float | None = None, *, ambiguous: bool = False
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.ambiguous = ambiguous


class LeatRejected(LeatError):
    """Leat refused the request; `code` is Leat's own error code (0: the body had none).

    `errors` is the body's optional field detail (`{"field": ["text", ...]}`), as the official
    PHP SDK's `ExceptionMapper` reads it. A body that is not Leat's error envelope (a bare
    HTTP 404 page, no `code`) gives code 0.
    """

    def __init__(
        self,
        code: int,
        message: str,
        status_code: int = 400,
        errors: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        super().__init__(f"Leat error {code}: {message}")
        self.code = code
        self.leat_message = message
        self.status_code = status_code
        self.errors: Mapping[str, tuple[str, ...]] = dict(errors or {})


class LeatAuthError(LeatError):
    """Leat refused our credentials (HTTP 401)."""


class BusError(ApplianceError):
    """The MQTT bus could not connect or publish."""


class OutboxError(ApplianceError):
    """The durable outbox refused or failed an operation."""


class OutboxDamaged(OutboxError):
    """The outbox must not take new orders until a technician acts; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"outbox damaged: {reason}")
        self.reason = reason
