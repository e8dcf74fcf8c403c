"""The device assembled from its config: `build(config)` gives a `ScanService` (daemon.py)
with every part wired (decoder, bus, feedback, camera, and when Leat is configured the
resolver, the outbox and its forwarder, the command ledger and the POS request worker).

Neither the camera nor the LEDs can stop the start, and neither can a damaged outbox or
ledger: each is reported in `state` and refused to the POS by name (`storage_damaged`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from appliance import CONTRACT_VERSION, __version__
from appliance.bus import MqttBus
from appliance.camera import open_source
from appliance.codes import Classifier
from appliance.config import Config, capabilities, read_secret
from appliance.daemon import Heartbeats, ScanService
from appliance.debounce import Debouncer
from appliance.decode import Decoder
from appliance.delivery import TokenSettings
from appliance.enrol import EnrolError, Enroller, SpoolStore, UsedCodes, read_fleet_key
from appliance.errors import CameraError, ConfigError, OutboxDamaged
from appliance.exposure import ExposureSteer, SteerSettings
from appliance.feedback import FeedbackLike, FeedbackState, open_feedback
from appliance.forwarder import Forwarder
from appliance.outbox import Outbox
from appliance.pipeline import ScanHandler
from appliance.pos.intake import OrderRequests
from appliance.pos.ledger import Ledger, LedgerDamaged
from appliance.resolve import Resolver
from appliance.sdnotify import Notifier
from appliance.source import FrameSource

log = logging.getLogger(__name__)

INFO_SCHEMA = "leat-scanner/info/1"


def leat_configured(config: Config) -> bool:
    """True when Leat credentials are configured (a token, or an OAuth client)."""
    leat = config.leat
    return leat.client_id is not None or read_secret("leat-token", leat.token_file) is not None


def info_payload(config: Config) -> dict[str, Any]:
    """The retained `info` payload (contract: info.schema.json)."""
    return {
        "schema": INFO_SCHEMA,
        "device_id": config.device.id,
        "version": __version__,
        "contract_version": CONTRACT_VERSION,
        "capabilities": capabilities(config),
        "started_at": ScanHandler.iso(time.time()),
        "decode_formats": list(config.decode.formats),
    }


def build(
    config: Config,
    *,
    source: FrameSource | None = None,
    feedback: FeedbackLike | None = None,
    pin_factory: Any = None,
    stop_when_source_ends: bool = True,
    notifier: Notifier | None = None,
) -> ScanService:
    """Build the scan service from config; `source`/`feedback` may be injected (demo, tests).

    Neither the camera nor the LEDs can stop the start: a camera that fails to open is
    retried by the camera thread (DEGRADED meanwhile) and failing pins mean no feedback
    (`feedback.open_feedback`). `notifier` defaults to systemd's `$NOTIFY_SOCKET`.
    """
    decoder = Decoder(config.decode)
    classifier = Classifier(config.codes)
    password = read_secret("mqtt-password", config.mqtt.password_file)
    bus = MqttBus(
        config.mqtt,
        config.base_topic,
        f"leat-scanner-{config.device.id}",
        password,
        info_payload(config),
    )
    feedback_state = getattr(feedback, "state", None)
    if feedback is None:
        feedback, feedback_state = open_feedback(config.feedback, pin_factory)
    reopen = camera_error = None
    if source is None:
        def reopen() -> FrameSource:
            return open_source(config.camera)

        try:
            source = reopen()
        except CameraError as exc:
            camera_error = str(exc)
            log.error("camera failed: %s (retrying in the background; orders are served)",
                      camera_error)
        except BaseException:  # a config problem (ConfigError): exit 2, pins released
            feedback.close()
            raise
    resolver = forwarder = None
    outbox_damaged = ledger_damaged = None
    if leat_configured(config):
        try:  # before any thread opens it (outbox_guard.py)
            Outbox.prepare(config.outbox_path)
        except OutboxDamaged as exc:  # `state` shows it; orders are refused storage_damaged
            log.error("outbox unusable, orders are refused until a technician acts: %s",
                      exc.reason)
            outbox_damaged = exc.reason
        try:  # the command ledger, before its threads (pos/ledger.py)
            Ledger.prepare(ledger_path(config))
        except LedgerDamaged as exc:  # commands are refused storage_damaged; orders go on
            log.error("command ledger unusable, commands are refused until a technician "
                      "acts: %s", exc.reason)
            ledger_damaged = exc.reason
        resolver, forwarder, requests = _leat_parts(config, bus, ledger_damaged)
    else:  # every POS request is answered `not_configured`
        requests = OrderRequests(
            None, bus.publish_response, base_topic=config.base_topic, shop_uuid=None,
            refuse=bus.publish_refusal,
        )
    bus.serve("request/+", requests)
    handler = ScanHandler(
        config.device.id,
        classifier,
        bus.publish_event,
        scan_values=config.privacy.scan_values,
        resolver=resolver,
        identification_ttl_s=config.leat.identification_ttl_s,
    )
    heartbeats = Heartbeats()
    heartbeats.watch("requests", lambda: requests.busy_since)  # the POS request worker
    if forwarder is not None:
        forwarder.heartbeat = lambda: heartbeats.beat("forwarder")
    service = ScanService(
        device_id=config.device.id,
        source=source,
        decoder=decoder,
        debouncer=Debouncer(config.debounce),
        handler=handler,
        bus=bus,
        feedback=feedback,
        resolver=resolver,
        forwarder=forwarder,
        stop_when_source_ends=stop_when_source_ends,
        outbox_damaged=outbox_damaged,
        commands_damaged=ledger_damaged,
        reopen=reopen,
        camera_error=camera_error,
        feedback_state=feedback_state if isinstance(feedback_state, FeedbackState) else None,
        notifier=notifier if notifier is not None else Notifier.from_environment(),
        heartbeats=heartbeats,
        steer=ExposureSteer(SteerSettings.from_config(config.camera)),
    )
    service.enroller = open_enroller(config)
    return service


def open_enroller(config: Config) -> Enroller:
    """The enrolment interceptor; without a valid enrol-key credential it refuses codes."""
    key = None
    try:
        text = read_secret("enrol-key", None)
        key = read_fleet_key(text) if text is not None else None
    except (ConfigError, EnrolError) as exc:
        log.error("enrolment codes refused: credential enrol-key unusable: %s", exc)
    state = config.device.state_dir
    return Enroller(config.device.id, key, UsedCodes(state / "enrol-used"),
                    SpoolStore(state / "enrol"))


def _leat_parts(
    config: Config, bus: MqttBus, ledger_damaged: str | None = None
) -> tuple[Resolver, Forwarder, OrderRequests]:
    """Everything that talks to Leat, over one client: scan resolution, and orders
    (requests answered from the bus, stored in the outbox, forwarded by the forwarder)."""
    from appliance.leat.client import LeatClient  # httpx only when Leat is configured
    from appliance.pos.runner import Commands

    leat = config.leat
    client = LeatClient.from_config(leat)
    account_secret = read_secret("leat-account-secret", leat.account_secret_file)
    resolver = Resolver(
        client,
        shop_uuid=leat.shop_uuid,
        deadline_s=leat.resolve_deadline_s,
        account_secret=account_secret,
    )
    token = None
    if leat.portal_url is not None and account_secret is not None:
        token = TokenSettings(leat.portal_url, account_secret, leat.shop_uuid)
    wake = threading.Event()
    forwarder = Forwarder(
        config.outbox_path,
        client,
        bus.publish_event,
        device_id=config.device.id,
        shop_uuid=leat.shop_uuid,
        token=token,
        wake=wake,
    )
    commands = None if ledger_damaged is not None else Commands(
        client,
        ledger_path(config),
        config.outbox_path,
        bus.publish_event,
        device_id=config.device.id,
        deadline_s=leat.command_deadline_s,
        wake=wake,
    )
    requests = OrderRequests(
        config.outbox_path,
        bus.publish_response,
        base_topic=config.base_topic,
        shop_uuid=leat.shop_uuid,
        wake=wake,
        claim_url=forwarder.claim_url if token is not None else None,
        commands=commands,
        commands_refused=ledger_damaged,
        refuse=bus.publish_refusal,
    )
    return resolver, forwarder, requests


def ledger_path(config: Config) -> Path:
    """The command ledger (request_id -> outcome), next to the outbox in the state dir."""
    return config.outbox_path.with_name("commands.sqlite3")
