"""TOML config -> frozen, typed `Config`; every problem reported at once with its key path.

Sources, later wins: embedded defaults, the TOML file, `LEAT_SCANNER_<SECTION>__<KEY>`
environment variables (for development). Secrets never come from the TOML: they are read
from files named in it (`*_file` keys) or from `$CREDENTIALS_DIRECTORY` (systemd
`LoadCredential=`), and a secret file readable by group or others is refused.
"""

from __future__ import annotations

import os
import socket
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from appliance.errors import ConfigError

DEFAULT_PATH = Path("/etc/leat-scanner/config.toml")
ENV_PREFIX = "LEAT_SCANNER_"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

Pin = Annotated[int, Field(ge=0, le=27)]
"""A BCM GPIO number on the Raspberry Pi 40-pin header."""


def _safe_hostname() -> str:
    """The hostname reduced to characters allowed in a device id."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return name.strip("-_")[:64] or "leat-scanner"


class Section(BaseModel):
    """Base of every config section: frozen, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceConfig(Section):
    """Who this device is."""

    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)] = Field(default_factory=_safe_hostname)
    state_dir: Path = Path("/var/lib/leat-scanner")


class CameraConfig(Section):
    """Where frames come from and how the camera is set up."""

    source: Literal["picamera", "replay"] = "picamera"
    replay_path: Path | None = None  # a file or folder of PNG/JPEG frames (source = "replay")
    replay_loop: bool = False
    fps: Annotated[float, Field(gt=0, le=120)] = 15.0
    width: Annotated[int, Field(ge=64, le=4608)] = 1280
    height: Annotated[int, Field(ge=64, le=2592)] = 720
    lores_width: Annotated[int, Field(ge=0, le=4608)] = 640  # 0: decode the main stream
    lores_height: Annotated[int, Field(ge=0, le=2592)] = 360  # same 16:9 as main
    autofocus: Literal["continuous", "manual", "off"] = "continuous"
    lens_position: Annotated[float, Field(ge=0, le=32)] = 5.0  # dioptres, for "manual" (20 cm)
    max_exposure_us: Annotated[int, Field(ge=100, le=1_000_000)] = 10_000  # short: phone screens
    ev: Annotated[float, Field(ge=-8, le=8)] = -0.5  # slightly dark keeps glossy screens legible


class DecodeConfig(Section):
    """What zxing-cpp looks for and what it refuses."""

    formats: tuple[str, ...] = ("QRCode", "EAN13", "Code128")
    max_text_length: Annotated[int, Field(ge=1, le=4096)] = 512
    try_invert: bool = True


class DebounceConfig(Section):
    """When the same value may be reported again."""

    leave_after_s: Annotated[float, Field(ge=0, le=60)] = 0.6  # unseen this long = left view
    cooldown_s: Annotated[float, Field(ge=0, le=3600)] = 3.0  # then wait this long after leaving


class CodesConfig(Section):
    """Rules that decide what a scanned text is (docs/codes.md; first match wins, in order).

    Patterns are Python regular expressions matched against the whole value (`fullmatch`).
    """

    token_url_hosts: tuple[str, ...] = ()  # contacts-portal hosts; empty: any host with /l?...
    # Dash-separated groups, the first of 3+ characters: "ABC-123", "SPRING-2X7Q".
    voucher_pattern: str = r"[A-Z0-9]{3,12}(?:-[A-Z0-9]{2,12}){1,3}"
    # "GC-" + 6-32, or 5-32 letters and digits with a digit, as Leat's own giftcard hashes:
    # "GFTCRD123", "GJ2P725oe", "41654" (docs/leat-assumptions.md). Values that also fit
    # loyalty_pattern are asked of Leat: identifier first, then giftcard.
    giftcard_pattern: str = r"GC-[A-Z0-9]{6,32}|(?=[A-Za-z]*[0-9])[A-Za-z0-9]{5,32}"
    # "LC-" + 6-32, card numbers of 8-19 digits (EAN-13), opaque 20-64 character ids/hashes.
    loyalty_pattern: str = r"LC-[A-Z0-9]{6,32}|[0-9]{8,19}|[A-Za-z0-9][A-Za-z0-9_-]{19,63}"
    url_parameters: tuple[str, ...] = ("contact_identifier_value", "identifier", "hash", "code")


class TlsConfig(Section):
    """TLS to the broker."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip hostname check (never in production)


class MqttConfig(Section):
    """The broker and our topic namespace."""

    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password_file: Path | None = None  # or credential "mqtt-password"
    base_topic: str = "leat-scanner/{device_id}"
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    session_expiry_s: Annotated[int, Field(ge=0, le=86400)] = 3600  # broker holds requests
    tls: TlsConfig = TlsConfig()

    @field_validator("base_topic")
    @classmethod
    def _topic_has_no_wildcards(cls, value: str) -> str:
        if not value or any(c in value for c in "#+\0") or value.startswith("/"):
            raise ValueError("must be a topic without wildcards, NUL or a leading '/'")
        return value.rstrip("/")


class FeedbackConfig(Section):
    """LED and buzzer pins (BCM numbering; hw/README.md has the wiring)."""

    enabled: bool = True
    green_led_pin: Pin = 17
    red_led_pin: Pin = 27
    buzzer_pin: Pin = 22
    buzzer_active_high: bool = True


class PrivacyConfig(Section):
    """What personal data may leave the device on MQTT."""

    scan_values: Literal["raw", "masked"] = "raw"  # POS needs raw ids to attach them offline


class LeatConfig(Section):
    """The Leat API account (secrets come from files or credentials, never this file)."""

    base_url: str = "https://api.leat.com"
    shop_uuid: str | None = None
    token_file: Path | None = None  # personal access token; or credential "leat-token"
    client_id: str | None = None  # OAuth client credentials (when no token)
    client_secret_file: Path | None = None  # or credential "leat-client-secret"
    portal_url: str | None = None  # contacts portal, for Loyalty Token URLs
    account_secret_file: Path | None = None  # or credential "leat-account-secret"
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    resolve_deadline_s: Annotated[float, Field(gt=0, le=30)] = 1.5  # then: verified = false
    identification_ttl_s: Annotated[int, Field(ge=1, le=3600)] = 60  # MQTT message expiry


class LoggingConfig(Section):
    """Log verbosity (logs go to stderr; journald keeps them)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Config(Section):
    """The whole configuration of one device."""

    device: DeviceConfig = DeviceConfig()
    camera: CameraConfig = CameraConfig()
    decode: DecodeConfig = DecodeConfig()
    debounce: DebounceConfig = DebounceConfig()
    codes: CodesConfig = CodesConfig()
    mqtt: MqttConfig = MqttConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    leat: LeatConfig = LeatConfig()
    logging: LoggingConfig = LoggingConfig()

    @property
    def outbox_path(self) -> Path:
        """The durable outbox of orders: `<device.state_dir>/outbox.sqlite3`."""
        return self.device.state_dir / "outbox.sqlite3"

    @property
    def base_topic(self) -> str:
        """The MQTT base topic with `{device_id}` filled in."""
        return self.mqtt.base_topic.replace("{device_id}", self.device.id)


def load(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, merge and validate the config; raise `ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            problems.append(f"{path}: no such file")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
        except tomllib.TOMLDecodeError as exc:
            problems.append(f"{path}: not valid TOML: {exc}")
    problems += _apply_environment(data, environ)
    if problems:
        raise ConfigError(problems)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(error) for error in exc.errors()]) from None


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> list[str]:
    """Overlay `LEAT_SCANNER_SECTION__KEY=value` (value parsed as TOML, else a string)."""
    problems = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        if not all(keys):
            problems.append(f"{name}: malformed override name")
            continue
        try:
            value: Any = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = data
        for key in keys[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                problems.append(f"{name}: {'.'.join(keys)} is not a table")
                break
            node = child
        else:
            node[keys[-1]] = value
    return problems


def _describe(error: Mapping[str, Any]) -> str:
    """One line for one pydantic error: `key.path: message (got value)`."""
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    got = error.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{where}: {error['msg']}{shown}"


def read_secret(
    name: str,
    file: Path | None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """A secret from `file`, else from `$CREDENTIALS_DIRECTORY/name`; None when neither exists.

    Files must be readable by their owner alone (mode 0600 or 0400); systemd credentials
    are trusted as they are. Trailing newlines are stripped.
    """
    environ = os.environ if environ is None else environ
    if file is not None:
        try:
            mode = file.stat().st_mode
        except OSError as exc:
            raise ConfigError([f"secret {name}: cannot read {file}: {exc.strerror}"]) from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                [f"secret {name}: {file} is readable by others (mode {mode & 0o777:o}); "
                 f"run: chmod 600 {file}"]
            )
        return _read_text(name, file)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if credentials:
        candidate = Path(credentials) / name
        if candidate.exists():
            return _read_text(name, candidate)
    return None


def _read_text(name: str, file: Path) -> str:
    try:
        value = file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"secret {name}: cannot read {file}: {exc}"]) from None
    if not value:
        raise ConfigError([f"secret {name}: {file} is empty"])
    return value
