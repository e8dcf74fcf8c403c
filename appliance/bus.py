"""MQTT over paho-mqtt 2.x (MQTT v5): availability + Last Will, retained info/state, events.

Threads: paho runs its own network thread (`loop_start`; restarted by `supervise()` if it
ever ends, which the daemon calls every second); every callback, including the
handlers given to `MqttBus.subscribe`, runs on it, so handlers must be quick and must not
block on the bus. Work that can take time (parsing, validating, a SQLite commit) belongs to
a `Service` given to `MqttBus.serve`: its `on_message` only queues or refuses on paho's
thread, its own worker does the rest; the bus starts it and, on `stop()`, lets it answer
what it holds before going offline. Public methods are safe to call from any thread.

Size: the broker provisioned with the device refuses packets over
`BROKER_MAX_PACKET_BYTES` (mosquitto `max_packet_size`), well above the request limit
(`appliance.pos.intake`), so that the device itself answers a too large request. The device
also tells the broker the largest packet it takes (MQTT v5 Maximum Packet Size,
`MAX_PACKET_BYTES`): a broker without a limit of its own then drops a huge message for us
instead of making us read it (MQTT 5.0 §3.1.2.11.4).

Connection: `start()` never blocks on the broker. paho connects in the background and
reconnects by itself (1 s, doubling up to 30 s). On every successful (re)connect the bus
re-subscribes its handlers and republishes retained `info`, the latest `state` and then
`availability` ("online"), in that order (a broker handles one client's packets in order),
since a broker restarted without persistence forgets retained messages, and a POS that
reads the capabilities when "online" arrives must find this run's `info` already there.
A refused connection (bad credentials, not authorised) is never reported as connected.
MQTT strings are read by `mqtt_strings.read_string`, not paho's reader, which refuses U+FEFF
and so dropped the connection on a request carrying one, at every reconnect.

Held messages: with a persistent session the broker keeps what was published for us while we
were away (a restart, a lost connection) and hands it out right after CONNACK. MQTT does not
say when a message was published, so on a resumed session the bus publishes a random marker
to its own `<base>/marker` topic and flags every message received before the marker comes
back `Message.resumed`: the broker sends one client's messages in the order it queued them
(Mosquitto 2.0 `db__message_insert` queues behind what waits, `db__message_write_queued_out`
sends in order), so everything it held arrives first. A request published in the moment of
the reconnect may be flagged too (it is refused, never run late). The check fails closed: a
marker paho cannot queue yet (its queue full of events) is sent again on every message and
every `supervise()`, and flagging goes on until it is back; only when no message at all came
for `MARKER_QUIET_S`, or `MARKER_MAX_S` after it was sent (a broker that drops it while tills
keep asking), does flagging end, with a warning.

Queueing: QoS 1 events published while disconnected wait in paho's in-memory queue, bounded
by `max_queued`; a full queue raises `BusError` (nothing is dropped silently). Events with a
message expiry are held by the bus instead and sent on reconnect with the remaining expiry
only (or dropped, with a log line, once expired), so a late POS never sees an old scan.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from appliance import mqtt_strings
from appliance.config import MqttConfig
from appliance.errors import BusError

log = logging.getLogger(__name__)
mqtt_strings.install()  # U+FEFF in a request's properties must not take the device off MQTT

ONLINE = "online"
OFFLINE = "offline"
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
BROKER_MAX_PACKET_BYTES: Final = 1024 * 1024  # the broker's max_packet_size (provisioned)
MAX_PACKET_BYTES: Final = BROKER_MAX_PACKET_BYTES + 64 * 1024  # what we take: that, forwarded
MARKER_QUIET_S: Final = 30.0  # no message for this long after the marker was sent, and it
# is not back: the broker dropped it, and flagging ends
MARKER_MAX_S: Final = 120.0  # nor this long after it was sent: what the broker held is out


@dataclass(frozen=True)
class Message:
    """An MQTT message received on a subscribed topic (MQTT v5 request fields included)."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    user_properties: tuple[tuple[str, str], ...] = ()
    # MQTT v5 message expiry: the broker sends the lifetime left (MQTT 5.0 §3.3.2.3.3), so
    # the request expires `expiry_s` after `received_at` (time.monotonic()).
    expiry_s: int | None = None
    received_at: float = field(default_factory=time.monotonic, compare=False)
    # a retained message handed out as we subscribed (not one published while we listen)
    retained: bool = False
    # handed out from the session the broker kept while we were away (module docstring):
    # it may have waited there up to `mqtt.session_expiry_s`
    resumed: bool = False

    def json(self) -> Any:
        """The payload decoded as UTF-8 JSON (raises ValueError when it is not)."""
        return json.loads(self.payload.decode("utf-8"))


Handler = Callable[[Message], None]


class Service(Protocol):
    """Requests served off paho's network thread (`appliance.pos.intake.OrderRequests`)."""

    def on_message(self, message: Message) -> None:
        """Called on paho's thread: queue the message for the worker, or refuse it at once."""

    def start(self) -> None:
        """Start the worker."""

    def stop(self, timeout: float = 5.0) -> None:
        """Answer what is queued, then end the worker."""


class PahoOutageFilter(logging.Filter):
    """Drops what paho logs at ERROR about an outage the bus reports itself, once:
    "failed to receive on socket: <error>" when the connection breaks (paho-mqtt 2.2
    `Client._packet_read`; `on_disconnect` then only says "Unspecified error"), and "Client is
    not connected" on every reconnect attempt while the broker is away (`Client._loop`, run
    by `loop_forever` after each failed `reconnect()`). The socket error's text is kept for
    the bus's one warning (`MqttBus._on_disconnect`)."""

    def __init__(self) -> None:
        super().__init__()
        self.socket_error: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        """False for those two messages."""
        message = str(record.msg)
        if message.startswith("failed to receive on socket"):
            args = record.args if isinstance(record.args, tuple) else ()
            self.socket_error = str(args[0]) if args else message
            return False
        return not message.startswith("Client is not connected")


@dataclass(frozen=True)
class _Expiring:
    """An expiring event held while disconnected."""

    topic: str
    data: bytes
    deadline: float


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as every JSON payload on the bus is sent."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


class MqttBus:
    """The device's MQTT connection: `start()`, publish events and state, `stop()`."""

    def __init__(
        self,
        mqtt_cfg: MqttConfig,
        base_topic: str,
        client_id: str,
        password: str | None,
        info: Mapping[str, Any],
        *,
        max_queued: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = mqtt_cfg
        self._base = base_topic.rstrip("/")
        self._info = encode(info)
        self._max_queued = max_queued
        self._clock = clock
        self._lock = threading.RLock()
        self._connected = threading.Event()
        self._serving = threading.Event()  # connected, and the broker acked our subscriptions
        self._state: bytes | None = None
        self._handlers: dict[str, Handler] = {}
        self._services: list[Service] = []
        self._expiring: deque[_Expiring] = deque()
        self._last_problem: str | None = None
        self._lost_at: float | None = None  # when the connection was lost (clock)
        self._marker: bytes | None = None  # this resumed session's marker, until it is back
        self._marker_sent = False  # paho took it (else it is sent again: fail closed)
        self._marker_refused = False  # paho refused this connection's marker (logged once)
        self._last_held_at = 0.0  # when the marker was sent or a held message last came
        self._marker_sent_at = 0.0
        self._marker_mid: int | None = None  # the marker's SUBSCRIBE
        self._caught_up = threading.Event()  # connected, and nothing held is still coming
        self._started = False
        self._stopping = False
        self._client = self._make_client(client_id, password)

    def _make_client(self, client_id: str, password: str | None) -> mqtt.Client:
        cfg = self._cfg
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        paho_log = log.getChild(f"paho.{client_id}")  # one per connection: its own filter
        outage = next((f for f in paho_log.filters if isinstance(f, PahoOutageFilter)), None)
        if outage is None:
            outage = PahoOutageFilter()
            paho_log.addFilter(outage)
        self._outage = outage
        client.enable_logger(paho_log)
        client.max_queued_messages_set(self._max_queued)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.will_set(self.topic("availability"), OFFLINE, qos=1, retain=True)
        if cfg.username is not None:
            client.username_pw_set(cfg.username, password)
        elif password is not None:
            log.warning("an MQTT password is set but no username: the password is not used")
        if cfg.tls.enabled:
            try:
                client.tls_set(
                    ca_certs=_path(cfg.tls.ca_file),
                    certfile=_path(cfg.tls.cert_file),
                    keyfile=_path(cfg.tls.key_file),
                )
                client.tls_insecure_set(cfg.tls.insecure)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise BusError(f"cannot set up TLS to the MQTT broker: {exc}") from exc
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = _no_delay
        return client

    @property
    def base_topic(self) -> str:
        """The device's base topic, e.g. `leat-scanner/<device_id>`."""
        return self._base

    def topic(self, subtopic: str) -> str:
        """The full topic of `subtopic` under the base topic."""
        return f"{self._base}/{subtopic.strip('/')}"

    @property
    def connected(self) -> bool:
        """True while connected and accepted by the broker."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a connection; True when connected."""
        return self._connected.wait(timeout)

    def wait_serving(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until connected with the `serve()` subscriptions
        acknowledged by the broker (a request published before that, on a first connection,
        is not delivered: the broker has no subscription for it yet); True when serving."""
        return self._serving.wait(timeout)

    def wait_caught_up(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until connected and past what the broker held for
        us (the marker is back, or the session was new); True then."""
        return self._caught_up.wait(timeout)

    def start(self) -> None:
        """Connect in the background; returns at once, whether or not the broker is up."""
        with self._lock:
            if self._stopping:
                raise BusError("the MQTT bus was stopped and cannot be started again")
            if self._started:
                return
            for service in self._services:
                service.start()
            try:
                self._client.connect_async(
                    self._cfg.host,
                    self._cfg.port,
                    keepalive=self._cfg.keepalive_s,
                    **self._session(),
                )
            except (OSError, ValueError) as exc:
                raise BusError(f"cannot connect to MQTT broker: {exc}") from exc
            self._client.loop_start()
            self._started = True
        log.info("MQTT: connecting to %s:%d as %s", self._cfg.host, self._cfg.port, self._base)

    def supervise(self) -> bool:
        """Start paho's network thread again if it has ended; True when it had to.

        paho's thread runs `loop_forever`, which an exception raised inside paho or a
        callback ends for good (`suppress_exceptions` is False); from then on nothing is
        received or sent. `loop_start` refuses while the thread lives (MQTT_ERR_INVAL) and
        starts a new one otherwise, so it is the check too (no private state read).
        """
        with self._lock:
            if not self._started or self._stopping:
                return False
            if self._connected.is_set():
                self._send_marker()  # one paho could not queue at the reconnect
            # paho opens a new wake-up socket pair for the new thread and never closes the
            # old one (only Client.__del__ does, `_reset_sockets`)
            wake = [getattr(self._client, name, None) for name in ("_sockpairR", "_sockpairW")]
            if self._client.loop_start() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return False
            for sock in wake:
                if isinstance(sock, socket.socket):
                    sock.close()
        log.error("MQTT: the network thread had ended; started it again")
        return True

    def _session(self) -> dict[str, Any]:
        """CONNECT options: the largest packet we take (`MAX_PACKET_BYTES`), and a persistent
        MQTT v5 session when `session_expiry_s` > 0: the broker keeps our subscriptions and
        holds QoS 1 requests sent while we restart (systemd restarts us within seconds), so
        a POS request published in that gap is not lost."""
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.MaximumPacketSize = MAX_PACKET_BYTES
        expiry = self._cfg.session_expiry_s
        if expiry <= 0:
            return {"clean_start": True, "properties": properties}
        properties.SessionExpiryInterval = expiry
        return {"clean_start": False, "properties": properties}

    def stop(self, timeout: float = 5.0) -> None:
        """Let the services answer what they hold, publish retained "offline" (waiting up to
        `timeout` s for it), then disconnect."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            was_started = self._started
            services = list(self._services)
        if not was_started:
            return
        for service in services:
            service.stop(timeout)
        was_connected = self.connected
        reason = None
        if was_connected and not self._publish_offline(timeout):
            # let the broker publish our Last Will ("offline", retained) instead
            reason = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
        self._client.disconnect(reasoncode=reason)
        self._client.loop_stop()
        # paho 2.2 closes the socket pair that wakes its network thread only in
        # Client.__del__ (`_reset_sockets`), i.e. whenever the garbage collector gets to it.
        reset = getattr(self._client, "_reset_sockets", None)
        if reset is not None:
            reset()
        self._connected.clear()
        self._serving.clear()
        self._caught_up.clear()
        log.info("MQTT: disconnected")

    def _publish_offline(self, timeout: float) -> bool:
        """Publish retained "offline" and wait for the broker's ack; False if not acked."""
        try:
            info = self._client.publish(self.topic("availability"), OFFLINE, 1, retain=True)
            info.wait_for_publish(timeout)
            if info.is_published():
                return True
            log.warning("MQTT: 'offline' not acknowledged within %.1f s", timeout)
        except (RuntimeError, ValueError) as exc:  # paho: not queued / not connected
            log.warning("MQTT: could not publish 'offline': %s", exc)
        return False

    def publish_event(
        self, name: str, payload: Mapping[str, Any], expiry_s: float | None = None
    ) -> None:
        """Publish JSON to `<base>/events/<name>` (QoS 1, not retained); BusError if not queued.

        `expiry_s` sets the MQTT v5 message expiry; while disconnected such an event is held
        and sent with its remaining expiry on reconnect, or dropped once expired.
        """
        if not name or any(c in name for c in "#+\0"):
            raise ValueError(f"invalid event name {name!r}")
        topic = self.topic(f"events/{name}")
        data = encode(payload)
        if expiry_s is None:
            self._publish(topic, data)
            return
        if expiry_s <= 0:
            raise ValueError("expiry_s must be positive")
        with self._lock:
            if self.connected:
                self._publish(topic, data, properties=_expiry(expiry_s))
                return
            self._drop_expired()
            if len(self._expiring) >= self._max_queued:
                raise BusError(f"MQTT queue full ({self._max_queued} expiring events): {topic}")
            self._expiring.append(_Expiring(topic, data, self._clock() + expiry_s))

    def set_state(self, payload: Mapping[str, Any]) -> None:
        """Publish retained `<base>/state` now if connected; it is republished on reconnect."""
        data = encode(payload)
        with self._lock:
            self._state = data
            if self.connected:
                self._publish_status("state", data)

    def subscribe(self, subtopic: str, handler: Handler) -> None:
        """Call `handler` (on paho's thread) for messages on `<base>/<subtopic>` (may hold + #)."""
        topic = self.topic(subtopic)
        with self._lock:
            self._handlers[topic] = handler
            if self.connected:
                self._client.subscribe(topic, options=SubscribeOptions(qos=1))

    def serve(self, subtopic: str, service: Service) -> None:
        """Subscribe `service.on_message` to `<base>/<subtopic>`; the bus starts `service`
        with itself and stops it (answering what it holds) before going offline."""
        with self._lock:
            self._services.append(service)
            started = self._started and not self._stopping
        if started:
            service.start()
        self.subscribe(subtopic, service.on_message)

    def publish_response(
        self, topic: str, payload: Mapping[str, Any], correlation_data: bytes | None = None
    ) -> None:
        """Publish a JSON reply to `topic` (an absolute topic; QoS 1, not retained)."""
        self._publish(topic, encode(payload), properties=_correlated(correlation_data))

    def publish_refusal(
        self, topic: str, payload: Mapping[str, Any], correlation_data: bytes | None = None
    ) -> None:
        """`publish_response` at QoS 0, for a request refused at the door (busy, too large,
        retained, a bad response topic): a flood of refused requests must not fill paho's
        bounded QoS 1 queue, which the replies to accepted requests and the events need (an
        outside test lost order events and scans so). A refusal lost with the connection
        costs nothing: nothing was done, and the POS sends the request again."""
        self._publish(topic, encode(payload), properties=_correlated(correlation_data), qos=0)

    def _publish(
        self,
        topic: str,
        data: bytes | str,
        retain: bool = False,
        properties: Properties | None = None,
        qos: int = 1,
    ) -> mqtt.MQTTMessageInfo:
        """Hand one message to paho (QoS 1: queued while disconnected); BusError if refused."""
        try:
            info = self._client.publish(topic, data, qos=qos, retain=retain, properties=properties)
        except (OSError, ValueError) as exc:
            raise BusError(f"cannot publish to {topic}: {exc}") from exc
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            raise BusError(f"MQTT queue full ({self._max_queued} messages): {topic} not queued")
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise BusError(f"cannot publish to {topic}: {mqtt.error_string(info.rc)}")
        return info

    def _publish_status(self, subtopic: str, data: bytes | str) -> None:
        """Publish a retained status message; at QoS 0 when events fill the QoS 1 queue."""
        topic = self.topic(subtopic)
        try:
            self._publish(topic, data, retain=True)
        except BusError as exc:
            log.warning("MQTT: %s; sending %s at QoS 0 instead", exc, subtopic)
            self._client.publish(topic, data, qos=0, retain=True)

    def _drop_expired(self) -> None:
        now = self._clock()
        kept = [item for item in self._expiring if item.deadline > now]
        if len(kept) < len(self._expiring):
            log.warning("MQTT: dropped %d expired event(s)", len(self._expiring) - len(kept))
            self._expiring = deque(kept)

    def _problem(self, problem: str) -> None:
        """Log a connection problem once until it changes or a connection succeeds."""
        if problem != self._last_problem:
            self._last_problem = problem
            log.warning("MQTT: %s", problem)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._problem(
                f"broker {self._cfg.host}:{self._cfg.port} refused the connection: "
                f"{reason_code.getName()} (user {self._cfg.username or '(none)'})"
            )
            return
        try:
            with self._lock:
                if self._stopping:
                    return
                self._last_problem = None
                lost_at, self._lost_at = self._lost_at, None
                # The broker handles our packets in order, so once "online" is seen, the
                # subscriptions are in place and `info` and `state` are current: a POS that
                # reads the capabilities on "online" never sees the previous run's.
                self._marker = None
                if self._handlers:
                    client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._handlers])
                    # on its own: a broker that refuses it still serves the requests
                    _, self._marker_mid = client.subscribe(self.topic("marker"), qos=1)
                else:
                    self._serving.set()
                if self._handlers and flags.session_present:  # after the SUBSCRIBE
                    self._marker = secrets.token_hex(16).encode()
                    self._marker_sent = self._marker_refused = False
                    self._send_marker()
                else:
                    self._caught_up.set()
                self._publish_status("info", self._info)
                if self._state is not None:
                    self._publish_status("state", self._state)
                self._publish_status("availability", ONLINE)
                self._drop_expired()
                while self._expiring:
                    item = self._expiring.popleft()
                    remaining = item.deadline - self._clock()
                    self._publish(item.topic, item.data, properties=_expiry(remaining))
                self._connected.set()
            if lost_at is None:
                log.info("MQTT: connected to %s:%d", self._cfg.host, self._cfg.port)
            else:
                log.info("MQTT: reconnected to %s:%d after %.0f s", self._cfg.host,
                         self._cfg.port, self._clock() - lost_at)
        except Exception:
            log.exception("MQTT: failed to set up the connection")

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if self._lost_at is None:  # during an outage, "connection lost" said it already
            self._problem(f"cannot reach broker {self._cfg.host}:{self._cfg.port}; retrying")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._serving.clear()
        self._caught_up.clear()
        socket_error, self._outage.socket_error = self._outage.socket_error, None
        if flags.is_disconnect_packet_from_server:
            detail = f"the broker said {reason_code.getName()}"
        else:  # paho says "Unspecified error" for every broken connection
            detail = socket_error or "the connection closed"
        if was_connected and not self._stopping:
            self._lost_at = self._clock()
            self._problem(f"connection lost ({detail}); reconnecting")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int,
                      reason_codes: list[ReasonCode], properties: Properties | None) -> None:
        refused = [code.getName() for code in reason_codes if code.is_failure]
        if mid == self._marker_mid:
            if refused:  # the marker will not come back: MARKER_QUIET_S ends the flagging
                log.warning("MQTT: broker refused the subscription to %s (%s)",
                            self.topic("marker"), refused[0])
            return
        if refused:
            self._problem(f"broker refused the request subscriptions: {', '.join(refused)}")
            return
        self._serving.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topic("marker"):
            with self._lock:
                if self._marker is not None and bytes(msg.payload) == self._marker:
                    self._marker = None
                    self._caught_up.set()
            return
        props = msg.properties
        message = Message(
            topic=msg.topic,
            payload=bytes(msg.payload),
            response_topic=getattr(props, "ResponseTopic", None),
            correlation_data=getattr(props, "CorrelationData", None),
            user_properties=tuple(getattr(props, "UserProperty", ())),
            expiry_s=getattr(props, "MessageExpiryInterval", None),
            retained=bool(msg.retain),
            resumed=self._held(),
        )
        with self._lock:
            items = list(self._handlers.items())
        handlers = [h for t, h in items if mqtt.topic_matches_sub(t, msg.topic)]
        if not handlers:
            log.debug("MQTT: no handler for %s", msg.topic)
        for handler in handlers:
            try:
                handler(message)
            except Exception:
                log.exception("MQTT: handler for %s failed", msg.topic)

    def _send_marker(self) -> None:
        """Hand this session's marker to paho unless it took it already (under `_lock`).

        Refused (paho's queue full), it is tried again with the next message and the next
        `supervise()`; until then everything counts as held (module docstring)."""
        if self._marker is None or self._marker_sent:
            return
        try:
            self._publish(self.topic("marker"), self._marker)
        except BusError as exc:
            if not self._marker_refused:  # once a connection: it is tried every second
                self._marker_refused = True
                log.warning("MQTT: %s; value-taking requests without an expiry are refused "
                            "until it is sent", exc)
            return
        self._marker_sent = True
        self._last_held_at = self._marker_sent_at = self._clock()

    def _held(self) -> bool:
        """True while this connection's marker is not back (messages the broker held)."""
        with self._lock:
            if self._marker is None:
                return False
            self._send_marker()
            now = self._clock()
            if not self._marker_sent or (now - self._last_held_at <= MARKER_QUIET_S
                                         and now - self._marker_sent_at <= MARKER_MAX_S):
                self._last_held_at = max(self._last_held_at, now)
                return True
            self._marker = None
            self._caught_up.set()
        log.warning("MQTT: the broker did not return the session marker (after %.0f s, or "
                    "%.0f s without a message); requests it held can no longer be told apart",
                    MARKER_MAX_S, MARKER_QUIET_S)
        return False


def _correlated(correlation_data: bytes | None) -> Properties | None:
    """PUBLISH properties carrying `correlation_data` (MQTT v5), or None without it."""
    if correlation_data is None:
        return None
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.CorrelationData = correlation_data
    return properties


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    """Send each packet at once: paho leaves Nagle's algorithm on, which with the peer's
    delayed ACK held a reply or an event back ~40 ms whenever an earlier one was unacked."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (e.g. a websocket wrapper)
        log.debug("MQTT: cannot set TCP_NODELAY on %r", sock)


def _expiry(seconds: float) -> Properties:
    """PUBLISH properties with a message expiry of `seconds` (rounded up, at least 1 s)."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = max(1, math.ceil(seconds))
    return properties


def _path(path: object) -> str | None:
    return None if path is None else str(path)
