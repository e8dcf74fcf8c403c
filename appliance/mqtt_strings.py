"""MQTT v5 strings as the specification reads them, in place of paho-mqtt 2.2's reader.

An MQTT UTF-8 string is a two-byte length and that many bytes of UTF-8 (MQTT 5.0 §1.5.4).
U+0000 is malformed ([MQTT-1.5.4-2]), and so are UTF-16 surrogates, which well-formed UTF-8
cannot hold ([MQTT-1.5.4-1]). U+FEFF, though, is a character like any other: a receiver
"MUST NOT skip over or strip" it ([MQTT-1.5.4-3]), and Mosquitto forwards it. paho-mqtt
2.2's `paho.mqtt.properties.readUTF` refuses it instead (`MalformedPacket("[MQTT-1.5.4-3]
U+FEFF in UTF-8 data")`), and a malformed PUBLISH closes the connection before its PUBACK.
So one request with U+FEFF in a user property, its response topic or its content type was
handed to the device again at every reconnect of its persistent session: the device was off
MQTT for good, for every till, and a restart did not help. `install()` replaces that reader
(properties.py looks it up at every call) with `read_string`, which also turns invalid
UTF-8 into `MalformedPacket` instead of a `UnicodeDecodeError` escaping into paho's loop.
"""

from __future__ import annotations

from typing import Final

import paho.mqtt.properties
from paho.mqtt.exception import MalformedPacket

_LENGTH_BYTES: Final = 2


def read_string(buffer: bytes, maxlen: int) -> tuple[str, int]:
    """The MQTT string at the start of `buffer` (at most `maxlen` bytes, its length field
    included) and the bytes it took; `MalformedPacket` when it is not one."""
    if maxlen < _LENGTH_BYTES or len(buffer) < _LENGTH_BYTES:
        raise MalformedPacket("Not enough data to read string length")
    length = int.from_bytes(buffer[:_LENGTH_BYTES], "big")
    if length > maxlen - _LENGTH_BYTES or length > len(buffer) - _LENGTH_BYTES:
        raise MalformedPacket("Length delimited string too long")
    try:
        text = bytes(buffer[_LENGTH_BYTES:_LENGTH_BYTES + length]).decode("utf-8")
    except UnicodeDecodeError as exc:  # surrogates included: UTF-8 cannot encode them
        raise MalformedPacket(f"[MQTT-1.5.4-1] not UTF-8: {exc.reason}") from None
    if "\x00" in text:
        raise MalformedPacket("[MQTT-1.5.4-2] Null found in UTF-8 data")
    return text, length + _LENGTH_BYTES


def install() -> None:
    """Make paho-mqtt read MQTT strings with `read_string` (idempotent)."""
    paho.mqtt.properties.readUTF = read_string
