"""Masking identifiers and e-mail addresses."""

from __future__ import annotations

import pytest

from appliance.privacy import MASK, mask, mask_email


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("LC-7F3K9Q2M", "LC******2M"),
        ("8712345678906", "87******06"),
        ("GC-8H2J4K6L8M", "GC******8M"),
        ("https://demo.leat.example/l?version=v3&hash=3f9a", "ht******9a"),
    ],
)
def test_mask_keeps_two_characters_at_each_end(value: str, masked: str) -> None:
    assert mask(value) == masked


@pytest.mark.parametrize("value", ["A", "ABC-123", "SPRING-2X", "123456789"])
def test_mask_hides_short_values_completely(value: str) -> None:
    assert mask(value) == MASK


def test_mask_hides_the_length() -> None:
    assert mask("A" * 10) == mask("A" * 200) == "AA******AA"
    assert mask("") == ""


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("jan@example.com", "j***@e***.com"),
        ("Jan.Jansen@mail.example.co.uk", "J***@m***.uk"),
        ("a@b.nl", "a***@b***.nl"),
        ("odd@localhost", "o***@l***"),
        (" jan@example.com\n", "j***@e***.com"),
    ],
)
def test_mask_email_keeps_first_letters_and_tld(email: str, masked: str) -> None:
    assert mask_email(email) == masked


@pytest.mark.parametrize("email", ["not-an-address", "@example.com", "jan@", ""])
def test_mask_email_masks_non_addresses_like_identifiers(email: str) -> None:
    assert mask_email(email) == mask(email)
    assert "example" not in mask_email(email)
