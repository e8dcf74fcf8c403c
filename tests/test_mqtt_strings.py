"""MQTT strings read as MQTT 5.0 §1.5.4 says, U+FEFF included (paho-mqtt 2.2 refuses it)."""

from __future__ import annotations

import struct

import paho.mqtt.properties
import pytest
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import appliance.bus  # noqa: F401 (installs the reader, as the daemon does)
from appliance.mqtt_strings import read_string


def encoded(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


@pytest.mark.parametrize("text", ["", "pos/till-1", "\ufeffhello", "caf\u00e9 \U0001f600"])
def test_a_string_is_read_whole_and_says_how_many_bytes_it_took(text: str) -> None:
    data = encoded(text)
    assert read_string(data + b"rest", len(data) + 4) == (text, len(data))


@pytest.mark.parametrize(("data", "maxlen", "problem"), [
    (b"\x00", 1, "string length"),
    (b"\x00\x05abc", 7, "too long"),  # fewer bytes than the length says
    (b"\x00\x05abcde", 6, "too long"),  # more than the property length allows
    (b"\x00\x03a\x00b", 5, "Null"),
    (b"\x00\x03\xed\xa0\x80", 5, "not UTF-8"),  # a UTF-16 surrogate, encoded
    (b"\x00\x02\xff\xfe", 4, "not UTF-8"),
])
def test_a_malformed_string_is_a_malformed_packet(data: bytes, maxlen: int, problem: str) -> None:
    with pytest.raises(MalformedPacket, match=problem):
        read_string(data, maxlen)


def test_paho_reads_properties_with_it() -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = "pos/till\ufeff"
    props.UserProperty = [("note", "\ufeffhello")]
    props.ContentType = "application/json\ufeff"
    packed = props.pack()  # type: ignore[no-untyped-call]

    assert paho.mqtt.properties.readUTF is read_string
    read = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    read.unpack(packed)  # type: ignore[no-untyped-call]
    assert read.ResponseTopic == "pos/till\ufeff"
    assert read.UserProperty == [("note", "\ufeffhello")]
    assert read.ContentType == "application/json\ufeff"
