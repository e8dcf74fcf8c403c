"""Test helpers: a private Mosquitto broker on a free port, and a collecting MQTT subscriber."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from appliance.localbroker import LocalMosquitto, MosquittoMissingError, free_port

# The broker itself is the product's own (the demo starts one the same way).
Mosquitto = LocalMosquitto

__all__ = ["Mosquitto", "MosquittoMissingError", "Subscriber", "free_port",
           "request_properties"]


def request_properties(response_topic: str, correlation: bytes,
                       expiry_s: int | None = None) -> Properties:
    """MQTT v5 PUBLISH properties of a POS request: where to answer, and its expiry."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = response_topic
    props.CorrelationData = correlation
    if expiry_s is not None:
        props.MessageExpiryInterval = expiry_s
    return props


class Subscriber:
    """A paho MQTT v5 client that subscribes to topic filters and collects what arrives."""

    def __init__(self, broker: Mosquitto, *filters: str, username: str | None = None,
                 password: str | None = None) -> None:
        self.filters = filters
        self.messages: list[mqtt.MQTTMessage] = []
        self._condition = threading.Condition()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5
        )
        self._client.enable_logger(logging.getLogger("tests.subscriber"))
        self._client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)  # type: ignore[arg-type]
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.on_socket_open = _no_delay  # as the device: no ~40 ms Nagle wait per ack
        self._client.connect_async(broker.host, broker.port)
        self._client.loop_start()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_subscribed(self, timeout: float = 10.0) -> Subscriber:
        """Wait until the broker acknowledged the subscriptions; fail the test otherwise."""
        if not self._subscribed.wait(timeout):
            raise AssertionError(f"subscriber not subscribed to {self.filters} in {timeout} s")
        return self

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:
            options = SubscribeOptions(qos=1, retainAsPublished=True)
            client.subscribe([(f, options) for f in self.filters])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self._subscribed.clear()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._condition:
            self.messages.append(msg)
            self._condition.notify_all()

    def wait_online(self, base_topic: str, times: int = 1, timeout: float = 20.0) -> None:
        """Wait until `<base_topic>/availability` has said "online" `times` times (requests
        are not retained: a POS waits until the device is, or is back, online)."""
        topic = f"{base_topic}/availability"
        self.wait_for(lambda ms: sum(m.topic == topic and m.payload == b"online"
                                     for m in ms) >= times, timeout=timeout)

    def wait_for(
        self,
        predicate: Callable[[Sequence[mqtt.MQTTMessage]], bool],
        timeout: float = 10.0,
    ) -> list[mqtt.MQTTMessage]:
        """Wait until `predicate(messages)` holds and return the messages; AssertionError if not."""
        with self._condition:
            if not self._condition.wait_for(lambda: predicate(self.messages), timeout):
                seen = [(m.topic, m.payload[:80]) for m in self.messages]
                raise AssertionError(f"condition not met within {timeout} s; received {seen}")
            return list(self.messages)

    def wait_message(
        self,
        topic: str,
        payload: bytes | None = None,
        timeout: float = 10.0,
    ) -> mqtt.MQTTMessage:
        """Wait for a message on exactly `topic` (and with `payload`, if given); return it."""
        def match(m: mqtt.MQTTMessage) -> bool:
            return m.topic == topic and (payload is None or m.payload == payload)

        messages = self.wait_for(lambda ms: any(match(m) for m in ms), timeout)
        return next(m for m in reversed(messages) if match(m))

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        """The messages received so far on exactly `topic`."""
        with self._condition:
            return [m for m in self.messages if m.topic == topic]

    def publish(self, topic: str, payload: bytes, properties: Any = None,
                timeout: float = 10.0, retain: bool = False) -> None:
        """Publish at QoS 1 and wait for the broker's acknowledgement."""
        self.wait_subscribed(timeout)
        info = self._client.publish(topic, payload, qos=1, properties=properties, retain=retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"publish to {topic} not acknowledged in {timeout} s"

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()


def _no_delay(client: mqtt.Client, userdata: Any, sock: Any) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
