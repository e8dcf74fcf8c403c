"""The JSON Schemas of the MQTT contract, and docs/asyncapi.yaml pointing at them."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import Draft202012Validator
from test_orders import order_body

from appliance import contract
from appliance.bus import MAX_PACKET_BYTES, OFFLINE
from appliance.config import LeatConfig, MqttConfig

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT / "appliance" / "contract"
ASYNCAPI = ROOT / "docs" / "asyncapi.yaml"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

VALID: dict[str, Any] = {
    "availability": "online",
    "info": {
        "schema": "leat-scanner/info/1",
        "device_id": "counter-1",
        "version": "0.1.0",
        "contract_version": "1",
        "capabilities": ["scan"],
        "started_at": "2025-03-01T08:00:00+01:00",
        "decode_formats": ["QRCode"],
    },
    "state": {
        "schema": "leat-scanner/state/1",
        "device_id": "counter-1",
        "timestamp": "2025-03-01T08:00:10Z",
        "camera": {"ok": False, "fps": 0, "error": "camera busy"},
        "scans_total": 0,
        "rejected_total": 0,
        "last_scan_at": "2025-03-01T07:59:10Z",
    },
    "scan": {
        "schema": "leat-scanner/events/scan/1",
        "event_id": "5f2b7c1e-8a4d-4f6b-9c3e-2d1a0b9c8d7e",
        "device_id": "counter-1",
        "timestamp": "2025-03-01T08:00:10.500Z",
        "captured_at": "2025-03-01T08:00:10.420Z",
        "kind": "voucher",
        "value": "V-ABCD-1234",
        "masked": False,
        "format": "QRCode",
    },
}


def _walk(node: object, path: str = "#") -> list[tuple[str, dict[str, Any]]]:
    """Every subschema (dict) below `node` with its JSON pointer-ish path."""
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found.append((path, node))
        for key, value in node.get("properties", {}).items():
            found += _walk(value, f"{path}/properties/{key}")
        if isinstance(node.get("items"), dict):
            found += _walk(node["items"], f"{path}/items")
    return found


def test_contract_names_lists_every_schema_file() -> None:
    files = sorted(p.name.removesuffix(".schema.json") for p in CONTRACT.glob("*.schema.json"))
    assert contract.names() == files
    assert {"availability", "info", "state", "scan"} <= set(files)


@pytest.mark.parametrize("name", contract.names())
def test_contract_schema_is_valid_draft_2020_12(name: str) -> None:
    document = json.loads((CONTRACT / f"{name}.schema.json").read_text(encoding="utf-8"))
    assert document["$schema"] == DRAFT
    Draft202012Validator.check_schema(document)
    assert contract.schema(name) == document


@pytest.mark.parametrize("name", contract.names())
def test_contract_schema_documents_every_field_and_forbids_extras(name: str) -> None:
    for path, node in _walk(contract.schema(name)):
        assert node.get("description"), f"{name}: {path} has no description"
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, f"{name}: {path} allows extras"


@pytest.mark.parametrize("name", sorted(VALID))
def test_contract_validate_accepts_example(name: str) -> None:
    contract.validate(name, VALID[name])


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("availability", "maybe"),
        ("info", {"contract_version": "2"}),
        ("info", {"started_at": "yesterday"}),
        ("info", {"extra": 1}),
        ("state", {"scans_total": -1}),
        ("state", {"camera": {"ok": True, "fps": -1, "error": None}}),
        ("state", {"last_scan_at": "2025-13-01T00:00:00Z"}),
        ("state", {"outbox": {"depth": 1}}),
        ("scan", {"event_id": "not-a-uuid"}),
        ("scan", {"event_id": "5f2b7c1e8a4d4f6b9c3e2d1a0b9c8d7e"}),
        ("scan", {"timestamp": "2025-03-01 08:00:10"}),
        ("scan", {"captured_at": "2025-03-01T08:00:10"}),
        ("scan", {"kind": "coupon"}),
        ("scan", {"value": "x" * 513}),
        ("scan", {"schema": "leat-scanner/events/scan/2"}),
    ],
)
def test_contract_validate_rejects_bad_payload(name: str, change: object) -> None:
    payload = {**VALID[name], **change} if isinstance(change, dict) else change
    with pytest.raises(jsonschema.ValidationError):
        contract.validate(name, payload)


def test_contract_validate_rejects_missing_required_field() -> None:
    payload = dict(VALID["scan"])
    del payload["event_id"]
    with pytest.raises(jsonschema.ValidationError, match="event_id"):
        contract.validate("scan", payload)


@pytest.mark.parametrize("value", ["look-1\n", "look-1\r\n", "\nlook-1", "look\n-1"])
def test_contract_ids_are_printable_ascii_to_the_last_character(value: str) -> None:
    # JSON Schema patterns are ECMA-262: `$` ends the string. Python's `$` also matches
    # before a final newline, so "look-1\n" passed as a printable-ASCII request_id.
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        contract.validate("command_contact_lookup", {"request_id": value, "identifier": "LC-1"})
    request = {"customer": {"identifier": "LC-1"}, "order": order_body(value)}
    with pytest.raises(jsonschema.ValidationError, match="does not match"):
        contract.validate("order_request", request)
    contract.validate("order_request", {**request, "order": order_body("pos-1")})


def test_contract_schema_returns_a_copy_and_unknown_name_raises() -> None:
    contract.schema("scan")["properties"].clear()
    assert contract.schema("scan")["properties"]
    with pytest.raises(KeyError, match="nope"):
        contract.schema("nope")


def test_contract_asyncapi_references_existing_schemas() -> None:
    text = ASYNCAPI.read_text(encoding="utf-8")
    assert text.startswith("asyncapi: 3.0.0")
    refs = re.findall(r"""\$ref:\s*["']?(\.\./appliance/contract/[\w.]+)["']?""", text)
    assert refs
    for ref in refs:
        assert (ASYNCAPI.parent / ref).resolve().is_file(), ref
    referenced = {Path(ref).name.removesuffix(".schema.json") for ref in refs}
    assert referenced == set(contract.names())
    for topic in ("availability", "info", "state", "events/scan"):
        assert f'address: "leat-scanner/{{device_id}}/{topic}"' in text


def test_contract_every_request_error_code_is_documented() -> None:
    from appliance.pos.errors import ERRORS

    enum = contract.schema("response")["properties"]["error"]["anyOf"][1]["properties"]["code"]
    assert tuple(enum["enum"]) == ERRORS
    asyncapi = ASYNCAPI.read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for code in ERRORS:
        assert f"- `{code}`" in asyncapi, code
        assert f"| `{code}` |" in readme, code
        assert code in enum["description"], code


def test_contract_order_request_sub_lines_have_no_sub_lines() -> None:
    line = contract.schema("order_request")["$defs"]["line"]
    sub_line = contract.schema("order_request")["$defs"]["sub_line"]
    assert line["properties"]["sub_line_items"]["items"]["$ref"] == "#/$defs/sub_line"
    assert "sub_line_items" not in sub_line["properties"]
    assert sub_line["additionalProperties"] is False


# docs/asyncapi.yaml as data (issue 8 item 6). Checked once by hand against the official
# AsyncAPI 3.0.0 JSON Schema (github.com/asyncapi/spec-json-schemas, definitions/3.0.0 and
# bindings/mqtt/0.2.0): no errors; these tests keep it parseable and tied to the code.

PREFIX = "leat-scanner/{device_id}/"


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (plain YAML keeps the last silently,
    so a merged document could lose a channel or an operation without anyone noticing)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        repeated = sorted({str(key) for key in keys if keys.count(key) > 1})
        assert not repeated, f"docs/asyncapi.yaml line {node.start_mark.line + 1}: {repeated}"
        return super().construct_mapping(node, deep=deep)


def _asyncapi() -> dict[str, Any]:
    document = yaml.load(ASYNCAPI.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    assert isinstance(document, dict)
    return document


def _refs(node: object) -> list[str]:
    """Every `$ref` value below `node`."""
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def _pointer(document: dict[str, Any], ref: str) -> object:
    node: object = document
    for part in ref.removeprefix("#/").split("/"):
        assert isinstance(node, dict) and part in node, f"{ref}: no {part!r}"
        node = node[part]
    return node


def _published_names() -> tuple[set[str], set[str]]:
    """(event names, status subtopics) the package publishes: the string literals given to
    `publish_event` / `_publish` / the forwarder's `_emit` (events: the publish callable the
    pipeline and forwarder get is `MqttBus.publish_event`) and to `_publish_status`."""
    events: set[str] = set()
    status: set[str] = set()
    for path in (ROOT / "appliance").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            first = node.args[0]
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if name in ("publish_event", "_publish", "publish", "_emit") and "/" not in first.value:
                events.add(first.value)
            elif name == "_publish_status":
                status.add(first.value)
    return events, status


def test_asyncapi_parses_and_every_ref_resolves() -> None:
    document = _asyncapi()
    assert document["asyncapi"] == "3.0.0"
    refs = _refs(document)
    assert refs
    for ref in refs:
        if ref.startswith("#/"):
            _pointer(document, ref)
        else:
            assert (ASYNCAPI.parent / ref).resolve().is_file(), ref
    for name, operation in document["operations"].items():
        assert operation["action"] in ("send", "receive"), name
        assert operation["channel"]["$ref"].startswith("#/channels/"), name


def test_asyncapi_and_readme_list_every_topic_the_code_publishes() -> None:
    events, status = _published_names()
    assert {"scan", "identification", "order"} <= events  # the scan is understood
    assert status == {"availability", "info", "state"}
    channels = _asyncapi()["channels"]
    addresses = {c["address"].removeprefix(PREFIX) for c in channels.values()}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for topic in sorted(status | {f"events/{name}" for name in events}):
        assert topic in addresses, f"docs/asyncapi.yaml has no channel for {topic}"
        assert f"| `{topic}` |" in readme, f"README's topic table has no row for {topic}"
    assert "response/{verb}" in addresses
    for topic in ("request/<verb>", "response/<verb>", "events/command"):
        assert f"| `{topic}` |" in readme, topic
    # a POS learns how to receive the events/* it missed while away
    assert "persistent session" in readme and "clean start false" in readme


def test_asyncapi_verb_enum_is_the_device_verb_table() -> None:
    from appliance.pos.commands import VERBS as COMMAND_VERBS
    from appliance.pos.intake import VERBS as ORDER_VERBS

    VERBS = {**ORDER_VERBS, **COMMAND_VERBS}  # noqa: N806

    document = _asyncapi()
    verb = document["components"]["parameters"]["verb"]
    assert verb["enum"] == sorted(VERBS)
    requests = {
        c["address"].removeprefix(f"{PREFIX}request/")
        for c in document["channels"].values()
        if c["address"].startswith(f"{PREFIX}request/")
    }
    assert requests == set(VERBS), "one request channel per verb"
    responses = document["channels"]["responses"]
    assert responses["parameters"]["verb"] == {"$ref": "#/components/parameters/verb"}
    for name, operation in document["operations"].items():
        channel = _pointer(document, operation["channel"]["$ref"])
        assert isinstance(channel, dict)
        if channel["address"].startswith(f"{PREFIX}request/"):
            assert operation["action"] == "receive", name
            assert operation["reply"] == {"$ref": "#/components/replies/response"}, name


def test_asyncapi_describes_mqtt5_request_fields_as_bindings() -> None:
    from appliance.pos.intake import MAX_TOPIC_BYTES

    document = _asyncapi()
    components = document["components"]
    request = components["messageBindings"]["request"]["mqtt"]
    assert {"responseTopic", "correlationData"} <= set(request)
    assert request["responseTopic"]["maxLength"] == MAX_TOPIC_BYTES
    assert "correlationData" in components["messageBindings"]["response"]["mqtt"]
    assert "messageExpiryInterval" in components["operationBindings"]["request"]["mqtt"]
    bindings = {"response": [document["channels"]["responses"]], "request": [
        c for c in document["channels"].values() if c["address"].startswith(f"{PREFIX}request/")
    ]}
    for kind, channels in bindings.items():  # every request message, and the response
        for channel in channels:
            for ref in channel["messages"].values():
                message = _pointer(document, ref["$ref"])
                assert isinstance(message, dict)
                assert message["bindings"] == {"$ref": f"#/components/messageBindings/{kind}"}
                assert message["correlationId"] == {
                    "$ref": "#/components/correlationIds/request"
                }
    reply = components["replies"]["response"]
    assert reply["address"]["location"] == "$message.header#/responseTopic"
    identification = document["operations"]["publishIdentification"]["bindings"]["mqtt"]
    assert identification["messageExpiryInterval"]["default"] == (
        LeatConfig().identification_ttl_s
    )


def test_asyncapi_server_binding_is_the_device_session() -> None:
    # the device keeps a persistent session (clean start false, session expiry), not a
    # clean one: issue 8 item 6
    mqtt = _asyncapi()["servers"]["local"]["bindings"]["mqtt"]
    defaults = MqttConfig()
    assert defaults.session_expiry_s > 0
    assert mqtt["cleanSession"] is False
    assert mqtt["sessionExpiryInterval"] == defaults.session_expiry_s
    assert mqtt["keepAlive"] == defaults.keepalive_s
    assert mqtt["maximumPacketSize"] == MAX_PACKET_BYTES
    assert mqtt["lastWill"] == {
        "topic": f"{PREFIX}availability", "qos": 1, "message": OFFLINE, "retain": True,
    }
    assert mqtt["bindingVersion"] == "0.2.0"


def test_every_command_reply_has_a_data_schema_and_a_wrong_one_is_refused() -> None:
    from appliance.pos.commands import VERBS as COMMAND_VERBS
    from appliance.pos.commands import Rule

    defs = contract.schema("command_reply")["$defs"]
    answered = {verb for verb, spec in COMMAND_VERBS.items() if spec.rule is not Rule.GIVES_BACK}
    assert set(defs) == answered | {"accepted"}
    reply = {"schema": "leat-scanner/response/1", "status": "ok", "transaction": None,
             "error": None, "request_id": "p-1", "data": {"points": 12}}
    contract.validate_reply("points.preview", reply)
    with pytest.raises(jsonschema.ValidationError, match="'12' is not of type"):
        contract.validate_reply("points.preview", {**reply, "data": {"points": "12"}})
    with pytest.raises(jsonschema.ValidationError, match="outbox_id"):
        contract.validate_reply("reward.reverse", {**reply, "status": "accepted"})
