"""The JSON Schemas of the MQTT contract, and docs/asyncapi.yaml pointing at them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from appliance import contract

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
