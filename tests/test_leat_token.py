"""Loyalty Token URLs: the documented test vector, validation, and the CLI."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from appliance.cli import main
from appliance.leat.token import loyalty_token_url, verify

VECTOR = {
    "shop_uuid": "abcde-1235-hijkl-1i2k3",
    "unique_id": "my_unique_id",
    "timestamp": 1646314054,
    "unit_value": "10",
    "secret": "very_secret",
}
VECTOR_HASH = "60585d543ff8bbd07ad9798b44241981b4e2d423"


def test_token_matches_documented_test_vector() -> None:
    url = loyalty_token_url(portal_url="https://demo.piggy.eu", **VECTOR)  # type: ignore[arg-type]
    assert url == (
        "https://demo.piggy.eu/l?version=v3&shop_uuid=abcde-1235-hijkl-1i2k3"
        "&unique_id=my_unique_id&timestamp=1646314054&unit_name=purchase_amount"
        f"&unit_value=10&hash={VECTOR_HASH}"
    )
    assert "secret" not in url


def test_token_verify_accepts_own_urls_and_rejects_tampering() -> None:
    url = loyalty_token_url(portal_url="https://demo.piggy.eu/", **VECTOR)  # type: ignore[arg-type]
    params = dict(parse_qsl(urlsplit(url).query))
    assert verify(params, "very_secret")
    assert not verify(params, "other_secret")
    assert not verify({**params, "unit_value": "100"}, "very_secret")
    assert not verify({k: v for k, v in params.items() if k != "timestamp"}, "very_secret")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unit_value": "-5"}, "positive"),
        ({"unit_value": "ten"}, "not a number"),
        ({"unit_value": "1e3"}, "plain decimal"),
        ({"unique_id": "a&secret=x"}, "unique_id"),
        ({"shop_uuid": ""}, "shop_uuid"),
        ({"secret": ""}, "secret"),
    ],
)
def test_token_rejects_bad_input(change: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loyalty_token_url(portal_url="https://p.example", **{**VECTOR, **change})  # type: ignore[arg-type]


def test_token_cli_prints_the_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    secret = tmp_path / "account-secret"
    secret.write_text("very_secret\n", encoding="utf-8")
    secret.chmod(0o600)
    argv = [
        "token", "--shop-uuid", "abcde-1235-hijkl-1i2k3", "--unique-id", "my_unique_id",
        "--unit-value", "10", "--timestamp", "1646314054", "--secret-file", str(secret),
        "--portal", "https://demo.piggy.eu",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().endswith(f"&hash={VECTOR_HASH}")


def test_token_cli_refuses_readable_secret_and_bad_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "account-secret"
    secret.write_text("very_secret", encoding="utf-8")
    secret.chmod(0o644)
    base = ["token", "--shop-uuid", "s", "--unique-id", "u", "--secret-file", str(secret),
            "--portal", "https://p.example"]
    assert main([*base, "--unit-value", "10"]) == 2
    assert "chmod 600" in capsys.readouterr().err
    secret.chmod(0o600)
    assert main([*base, "--unit-value", "-1"]) == 2
    assert "positive" in capsys.readouterr().err
