"""TOML config -> frozen, typed `Config`; every problem reported at once with its key path.

Sources, later wins: embedded defaults, the TOML file, `LEAT_SCANNER_<SECTION>__<KEY>`
environment variables (for development). Secrets never come from the TOML: they are read
from files named in it (`*_file` keys) or from `$CREDENTIALS_DIRECTORY` (systemd
`LoadCredential=`), and a secret file readable by group or others is refused.
"""

from __future__ import annotations

import os
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from appliance import identity
from appliance.errors import ConfigError

DEFAULT_PATH = Path("/etc/leat-scanner/config.toml")
ENV_PREFIX = "LEAT_SCANNER_"
DEVICE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"

Pin = Annotated[int, Field(ge=0, le=27)]
"""A BCM GPIO number on the Raspberry Pi 40-pin header."""


def _default_device_id() -> str:
    """`scanner-<serial tail>` on a Pi, else the hostname (`appliance.identity`)."""
    return identity.default_device_id().value


class Section(BaseModel):
    """Base of every config section: frozen, strict about unknown keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class DeviceConfig(Section):
    """Who this device is."""

    # Provisioning writes the id into config.toml, so a device keeps its topics and MQTT
    # session across upgrades whatever this default becomes.
    id: Annotated[str, Field(pattern=DEVICE_ID_PATTERN)] = Field(
        default_factory=_default_device_id
    )
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
    # Glare steering (appliance/exposure.py, docs/decoding.md): when the decoder sees glare
    # saturate a code region, the EV goes down by at most `glare_ev_step` stops at most once
    # every `glare_ev_interval_s`, never more than `glare_ev_depth` stops below `ev`, and back
    # to `ev` after `glare_ev_hold_s` without glare or a code in view. 0 step or depth: off.
    glare_ev_step: Annotated[float, Field(ge=0, le=4)] = 1.0
    glare_ev_depth: Annotated[float, Field(ge=0, le=8)] = 2.0
    glare_ev_interval_s: Annotated[float, Field(ge=0.1, le=60)] = 1.0
    glare_ev_hold_s: Annotated[float, Field(ge=0.1, le=600)] = 2.0


class DecodeConfig(Section):
    """What zxing-cpp looks for and what it refuses."""

    formats: tuple[str, ...] = ("QRCode", "EAN13", "Code128")
    max_text_length: Annotated[int, Field(ge=1, le=4096)] = 512
    try_invert: bool = True
    # Cheaper empty frames (docs/decoding.md): a frame whose 16x16-tile thumbnail moved by no
    # more than this many grey levels (and than its noise) repeats the last frame's result;
    # 0 reads every frame in full. At least every `still_recheck_frames`-th frame is read.
    still_threshold: Annotated[float, Field(ge=0, le=64)] = 6.0
    still_recheck_frames: Annotated[int, Field(ge=1, le=300)] = 60
    # Multi-frame: crops of a located-but-unread symbol kept and combined (1: off), and the
    # time the combinations may take per frame.
    multiframe_frames: Annotated[int, Field(ge=1, le=16)] = 6
    multiframe_budget_ms: Annotated[float, Field(ge=0, le=100)] = 12.0
    # Contrast stretch, CLAHE and denoising on a located symbol the plain read missed.
    preprocess: bool = True


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
    command_deadline_s: Annotated[float, Field(gt=0, le=60)] = 5.0  # value-taking commands


class LoggingConfig(Section):
    """Log verbosity (logs go to stderr; journald keeps them)."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


class WebConfig(Section):
    """The technician's page (docs/web.md): loopback unless `lan`, then behind a password."""

    enabled: bool = True
    host: str = "127.0.0.1"  # loopback: reach it through an SSH tunnel
    port: Annotated[int, Field(ge=0, le=65535)] = 8088  # 0: any free port (tests)
    lan: bool = False  # true: `host` may be a LAN address; a password is then required
    password_file: Path | None = None  # or credential "web-password"
    cert_file: Path | None = None  # TLS; default: mqtt.tls.cert_file when set
    key_file: Path | None = None  # default: mqtt.tls.key_file when set
    frames_dir: Path | None = None  # saved frames; default <device.state_dir>/frames
    frames_keep_h: Annotated[float, Field(gt=0, le=24 * 30)] = 24.0  # then deleted
    max_viewers: Annotated[int, Field(ge=1, le=8)] = 2

    @model_validator(mode="after")
    def _loopback_unless_lan(self) -> WebConfig:
        if not self.lan and self.host not in LOOPBACK_HOSTS:
            raise ValueError(f"host {self.host!r} is not loopback: set web.lan = true to serve "
                             "the page on the LAN (a password is then required)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class Config(Section):
    """The whole configuration of one device."""

    device: DeviceConfig = Field(default_factory=DeviceConfig)  # the id is read per load
    camera: CameraConfig = CameraConfig()
    decode: DecodeConfig = DecodeConfig()
    debounce: DebounceConfig = DebounceConfig()
    codes: CodesConfig = CodesConfig()
    mqtt: MqttConfig = MqttConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    leat: LeatConfig = LeatConfig()
    logging: LoggingConfig = LoggingConfig()
    web: WebConfig = WebConfig()

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


SECRETS: dict[str, str] = {  # credential name -> the config key naming its file
    "mqtt-password": "mqtt.password_file",
    "leat-token": "leat.token_file",
    "leat-client-secret": "leat.client_secret_file",
    "leat-account-secret": "leat.account_secret_file",
    "web-password": "web.password_file",
}


# Where systemd looks for the unit's credentials (LoadCredential= with a bare name,
# systemd.exec(5)), and their prefix there (provisioning/lib.sh, enrol_tools.py)
CREDENTIAL_STORES: tuple[Path, ...] = (Path("/etc/credstore"), Path("/run/credstore"))
CREDENTIAL_PREFIX: Final = "leat-scanner."


@dataclass(frozen=True)
class Validation:
    """What `check` reports and what stops `run`: problems (exit 2) and warnings."""

    problems: tuple[str, ...]
    warnings: tuple[str, ...]
    secrets: Mapping[str, bool]  # credential name -> present (never the value)
    # `check` outside the service: secrets found in the credential store (True: present) or
    # that this user may not look for there (None: judged absent, shown as not visible)
    stored: Mapping[str, bool | None] = field(default_factory=dict)


def stored_credential(name: str) -> bool | None:
    """Whether the systemd credential store holds the unit's credential `name`; None when
    this user may not look (the stores are root's)."""
    blocked = False
    for store in CREDENTIAL_STORES:
        try:
            if (store / f"{CREDENTIAL_PREFIX}{name}").exists():
                return True
        except PermissionError:
            blocked = True
    return None if blocked else False


def validate(
    cfg: Config,
    environ: Mapping[str, str] | None = None,
    device_id: Callable[[], identity.DeviceId] = identity.default_device_id,
    *,
    credential_store: bool = False,
) -> Validation:
    """Every problem of a loaded config that would make the device fail or accept what it
    cannot deliver, each with its key path; the one validation of `check` and `run`.

    `credential_store` (`check`): outside the service, where no $CREDENTIALS_DIRECTORY is
    set, a secret in the systemd credential store counts as present (the service gets it);
    one this user may not look for (the store is root's) is named in `stored` as unknown and
    judged absent, as before."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    warnings: list[str] = []
    present: dict[str, bool] = {}
    stored: dict[str, bool | None] = {}
    for name, key in SECRETS.items():
        section, attribute = key.split(".")
        file: Path | None = getattr(getattr(cfg, section), attribute)
        try:
            present[name] = read_secret(name, file, environ) is not None
        except ConfigError as exc:
            present[name] = False
            problems += [f"{key}: {problem}" for problem in exc.problems]
            continue
        if (credential_store and not present[name] and file is None
                and not environ.get("CREDENTIALS_DIRECTORY")):
            found = stored_credential(name)
            if found is not False:
                present[name], stored[name] = bool(found), found
    problems += _leat_problems(cfg.leat, present)
    problems += _file_problems(cfg)
    problems += _rule_problems(cfg)
    if cfg.web.enabled and cfg.web.lan and not present["web-password"]:
        problems.append("web.lan: the page on the LAN needs a password: set web.password_file "
                        "(0600) or the credential web-password")
    has_cert = cfg.web.cert_file is not None or (
        cfg.mqtt.tls.cert_file is not None and cfg.mqtt.tls.key_file is not None)
    if cfg.web.enabled and cfg.web.lan and not has_cert:
        warnings.append("web.lan: no certificate (web.cert_file, or mqtt.tls.cert_file), so "
                        "the page and its password go over the LAN unencrypted")
    if present["leat-account-secret"] and cfg.leat.portal_url is None:
        warnings.append(
            "leat.portal_url: not set, so scanned Loyalty Tokens are verified but anonymous "
            "orders are refused (not_configured): they need the portal URL for a claim QR"
        )
    if "id" not in cfg.device.model_fields_set and device_id().source == "hostname":
        warnings.append(
            f"device.id: no Raspberry Pi serial number found, so the id is the hostname "
            f"{cfg.device.id!r}; every new card is called 'raspberrypi' and two devices with "
            f"one id collide on MQTT: set device.id"
        )
    return Validation(tuple(problems), tuple(warnings), present, stored)


def capabilities(cfg: Config, environ: Mapping[str, str] | None = None,
                 present: Mapping[str, bool] | None = None) -> list[str]:
    """What this device offers on the bus (`info.capabilities`), for a validated config;
    `present`: which secrets there are (`Validation.secrets`), instead of reading them."""
    leat = cfg.leat

    def has(name: str, file: Path | None) -> bool:
        if present is not None:
            return present[name]
        return read_secret(name, file, environ) is not None

    found = ["scan"]
    if leat.client_id is not None or has("leat-token", leat.token_file):
        found += ["identify", "orders", "commands"]
        if leat.portal_url and has("leat-account-secret", leat.account_secret_file):
            found.append("anonymous_orders")
    if cfg.feedback.enabled:
        found.append("feedback")
    return found


def _leat_problems(leat: LeatConfig, present: Mapping[str, bool]) -> list[str]:
    """Leat settings that only work together (orders would be acked, then die)."""
    problems = []
    credentials = present["leat-token"] or leat.client_id is not None
    if leat.client_id is not None and not present["leat-token"] and not present[
        "leat-client-secret"
    ]:
        problems.append("leat.client_secret_file: client_id is set but there is no client "
                        "secret (file, or credential leat-client-secret)")
    if present["leat-client-secret"] and leat.client_id is None:
        problems.append("leat.client_id: required with the client secret")
    if credentials and not leat.shop_uuid:
        problems.append("leat.shop_uuid: required with Leat credentials (every order and "
                        "identification names the shop; Leat refuses orders without it)")
    if leat.portal_url is not None:
        portal = urlsplit(leat.portal_url)
        if portal.scheme not in ("https", "http") or not portal.netloc or portal.query:
            problems.append(f"leat.portal_url: must be https://host[/path] "
                            f"(got {leat.portal_url!r})")
        if not present["leat-account-secret"]:
            problems.append("leat.account_secret_file: portal_url is set but there is no "
                            "account secret (file, or credential leat-account-secret); "
                            "anonymous orders need both")
    return problems


def _file_problems(cfg: Config) -> list[str]:
    """Files the config names that are missing or unreadable."""
    problems = []
    tls = cfg.mqtt.tls
    named: dict[str, Path | None] = {"camera.replay_path": cfg.camera.replay_path}
    if tls.enabled:
        named |= {"mqtt.tls.ca_file": tls.ca_file, "mqtt.tls.cert_file": tls.cert_file,
                  "mqtt.tls.key_file": tls.key_file}
        if (tls.cert_file is None) != (tls.key_file is None):
            problems.append("mqtt.tls: cert_file and key_file go together")
    if cfg.web.enabled:
        named |= {"web.cert_file": cfg.web.cert_file, "web.key_file": cfg.web.key_file}
    if cfg.camera.source == "replay" and cfg.camera.replay_path is None:
        problems.append('camera.replay_path: required with camera.source = "replay"')
    for key, path in named.items():
        if path is not None and not os.access(path, os.R_OK):
            why = "no such file" if not path.exists() else "not readable by this user"
            problems.append(f"{key}: {path}: {why}")
    keys = {"mqtt.tls.key_file": tls.key_file if tls.enabled else None,
            "web.key_file": cfg.web.key_file if cfg.web.enabled else None}
    for name, key_file in keys.items():
        if key_file is not None and key_file.exists():
            mode = key_file.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                problems.append(f"{name}: {key_file} is readable by others "
                                f"(mode {mode & 0o777:o}); run: chmod 600 {key_file}")
    return problems


def _rule_problems(cfg: Config) -> list[str]:
    """Decode formats and code patterns, compiled as the daemon will compile them."""
    from appliance.codes import Classifier  # both import this module
    from appliance.ladder import parse_formats

    problems = []
    try:
        parse_formats(cfg.decode.formats)
    except ConfigError as exc:
        problems += exc.problems
    try:
        Classifier(cfg.codes)
    except ConfigError as exc:
        problems += exc.problems
    return problems
