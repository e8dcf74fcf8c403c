"""Classifying scanned texts with the default and with merchant-configured rules."""

from __future__ import annotations

import re

import pytest

from appliance.codes import MAX_VALUE_LENGTH, Classifier, Code, Kind
from appliance.config import CodesConfig
from appliance.errors import ConfigError
from appliance.samples import DEMO_CODES

TOKEN = DEMO_CODES["loyalty_token"]
HASH = "60585d543ff8bbd07ad9798b44241981b4e2d423"


@pytest.fixture
def classifier() -> Classifier:
    return Classifier(CodesConfig())


def _kind(classifier: Classifier, text: str) -> Kind:
    return classifier.classify(text).kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        # the demo values (samples.DEMO_CODES)
        ("LC-7F3K9Q2M", Kind.LOYALTY_CARD),
        ("GC-8H2J4K6L8M", Kind.GIFTCARD),
        ("SPRING-2X7Q", Kind.VOUCHER),
        # real-world forms
        ("8712345678906", Kind.LOYALTY_CARD),  # EAN-13 card number
        ("12345670", Kind.LOYALTY_CARD),  # EAN-8
        (HASH, Kind.LOYALTY_CARD),  # an opaque card hash
        ("3f2a8c1e-9b7d-4c6e-8a5f-1d2e3c4b5a69", Kind.LOYALTY_CARD),  # a uuid
        ("ABC-123", Kind.VOUCHER),  # Leat's voucher example
        ("WELCOME-10-OFF", Kind.VOUCHER),
        ("GFTCRD123", Kind.GIFTCARD),  # Leat's giftcard hash example
        ("HT123ABC", Kind.GIFTCARD),  # the POS tutorial's manual giftcard code
        ("GJ2P725oe", Kind.GIFTCARD),  # the official PHP SDK's giftcard test hash
        ("41654", Kind.GIFTCARD),  # Leat's create-giftcard example: the hash is the id
        ("PIGGY123", Kind.GIFTCARD),  # Leat's list-giftcards example
        # not ours
        ("hello", Kind.UNKNOWN),
        ("WIFI:S:shop;T:WPA;P:secret;;", Kind.UNKNOWN),
        ("LC 7F3K9Q2M", Kind.UNKNOWN),  # inner space
        ("LC-7F3K\x009Q2M", Kind.UNKNOWN),  # control character
        ("1234", Kind.UNKNOWN),  # too short for a card number or a giftcard hash
        ("giftcard", Kind.UNKNOWN),  # a word: no digit
        ("", Kind.UNKNOWN),
        ("ftp://example.com/?identifier=LC-7F3K9Q2M", Kind.UNKNOWN),
    ],
)
def test_classifier_defaults_tell_kinds_apart(
    classifier: Classifier, text: str, kind: Kind
) -> None:
    assert _kind(classifier, text) is kind


def test_classifier_bare_text_keeps_text_and_strips_value(classifier: Classifier) -> None:
    code = classifier.classify(" LC-7F3K9Q2M\r\n")
    assert code == Code(Kind.LOYALTY_CARD, "LC-7F3K9Q2M", " LC-7F3K9Q2M\r\n", {})


def test_classifier_rejects_overlong_values(classifier: Classifier) -> None:
    assert _kind(classifier, "1" * MAX_VALUE_LENGTH) is Kind.UNKNOWN  # over 19 digits
    assert _kind(classifier, "a" * 64) is Kind.LOYALTY_CARD
    assert _kind(classifier, "a" * (MAX_VALUE_LENGTH + 1)) is Kind.UNKNOWN


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/card?identifier=LC-7F3K9Q2M",
        "https://shop.example/card?utm_source=qr&contact_identifier_value=LC-7F3K9Q2M",
        "http://shop.example/card/?code=LC-7F3K9Q2M#top",
        "HTTPS://SHOP.EXAMPLE/card?identifier=LC-7F3K9Q2M",
        "https://shop.example/card?identifier=LC%2D7F3K9Q2M",
        "https://shop.example/#/card?identifier=LC-7F3K9Q2M",
        "https://shop.example/card#identifier=LC-7F3K9Q2M",
        "https://shop.example:8443/c?identifier=LC-7F3K9Q2M&identifier=GC-8H2J4K6L8M",
        "  https://shop.example/card?identifier=LC-7F3K9Q2M\n",
    ],
)
def test_classifier_url_takes_identifying_parameter(classifier: Classifier, url: str) -> None:
    code = classifier.classify(url)
    assert (code.kind, code.value, code.text) == (Kind.LOYALTY_CARD, "LC-7F3K9Q2M", url)


def test_classifier_url_parameters_follow_configured_order(classifier: Classifier) -> None:
    code = classifier.classify("https://x.example/v?code=SPRING-2X7Q&identifier=8712345678906")
    assert (code.kind, code.value) == (Kind.LOYALTY_CARD, "8712345678906")
    assert code.params == {"code": "SPRING-2X7Q", "identifier": "8712345678906"}
    only_code = Classifier(CodesConfig(url_parameters=("code",)))
    assert only_code.classify("https://x.example/v?code=SPRING-2X7Q").kind is Kind.VOUCHER


def test_classifier_url_query_wins_over_fragment(classifier: Classifier) -> None:
    code = classifier.classify("https://x.example/c?identifier=GC-8H2J4K6L8M#identifier=12345678")
    assert (code.kind, code.value) == (Kind.GIFTCARD, "GC-8H2J4K6L8M")


@pytest.mark.parametrize(
    "url",
    [
        "https://shop.example/",
        "https://shop.example/card?id=LC-7F3K9Q2M",  # not a configured parameter
        "https://shop.example/card?identifier=",
        "https://shop.example/card?identifier=LC+7F3K9Q2M",  # '+' decodes to a space
        "https://shop.example/card?identifier=LC-7F3K%0A9Q2M",  # encoded newline
        "https://shop.example/card?identifier=LC-7F3K9Q2M%2541",  # double encoding leaves '%'
        "https://shop.example/card?identifier=%FF%FE",  # not UTF-8
        "https://shop.example/card?identifier=nope",  # matches no pattern
        "https:///card?identifier=LC-7F3K9Q2M",  # no host
        "https://[::1/card?identifier=LC-7F3K9Q2M",  # malformed
        "https://shop.example/c?" + "&".join(f"f{i}=1" for i in range(100)),
    ],
)
def test_classifier_url_without_valid_identifier_is_unknown(
    classifier: Classifier, url: str
) -> None:
    code = classifier.classify(url)
    assert (code.kind, code.value) == (Kind.UNKNOWN, url)


def test_classifier_recognises_loyalty_token_url(classifier: Classifier) -> None:
    code = classifier.classify(TOKEN)
    assert (code.kind, code.value, code.text) == (Kind.LOYALTY_TOKEN, TOKEN, TOKEN)
    assert code.params["version"] == "v3"
    assert code.params["unique_id"] == "demo-0001"
    assert code.params["unit_value"] == "10"


@pytest.mark.parametrize(
    "url",
    [
        f"https://demo.piggy.eu/l?version=v1&shop_id=15&credits=20&unique_id=a&timestamp=1&hash={HASH}",
        f"https://demo.piggy.eu/l/?version=v3&unique_id=a&hash={HASH.upper()}",
        f"HTTPS://Demo.Piggy.EU/l?version=v3&unique_id=a&hash={HASH}#receipt",
    ],
)
def test_classifier_token_url_variants(classifier: Classifier, url: str) -> None:
    assert _kind(classifier, url) is Kind.LOYALTY_TOKEN


@pytest.mark.parametrize(
    "url",
    [
        f"https://demo.piggy.eu/l?version=v3&hash={HASH}",  # no unique_id
        f"https://demo.piggy.eu/x/l?version=v3&unique_id=a&hash={HASH}",  # other path
        "https://demo.piggy.eu/l?version=v3&unique_id=a&hash=abc",  # not a SHA-1
    ],
)
def test_classifier_token_url_needs_its_shape(classifier: Classifier, url: str) -> None:
    assert _kind(classifier, url) is not Kind.LOYALTY_TOKEN


def test_classifier_token_hosts_restrict_token_urls() -> None:
    classifier = Classifier(CodesConfig(token_url_hosts=("Shop.Piggy.EU", "*.leat.example")))
    token = f"/l?version=v3&unique_id=a&hash={HASH}"
    assert _kind(classifier, "https://shop.piggy.eu" + token) is Kind.LOYALTY_TOKEN
    assert _kind(classifier, "https://demo.leat.example" + token) is Kind.LOYALTY_TOKEN
    assert _kind(classifier, TOKEN) is Kind.LOYALTY_TOKEN  # demo.leat.example
    # Another shop's token is not ours, and its hash is never taken for a card.
    foreign = classifier.classify("https://other.piggy.eu" + token)
    assert (foreign.kind, foreign.value) == (Kind.UNKNOWN, "https://other.piggy.eu" + token)
    assert _kind(classifier, "https://leat.example" + token) is Kind.UNKNOWN
    assert _kind(classifier, "https://evil-shop.piggy.eu" + token) is Kind.UNKNOWN


def test_classifier_merchant_patterns_replace_defaults() -> None:
    classifier = Classifier(
        CodesConfig(
            voucher_pattern=r"(?i)V[0-9]{6}",
            giftcard_pattern="",  # disabled
            loyalty_pattern=r"2[0-9]{12}",
        )
    )
    assert _kind(classifier, "v123456") is Kind.VOUCHER
    assert _kind(classifier, "GC-8H2J4K6L8M") is Kind.UNKNOWN
    assert _kind(classifier, "2012345678901") is Kind.LOYALTY_CARD
    assert _kind(classifier, "8712345678906") is Kind.UNKNOWN


def test_classifier_patterns_must_match_whole_value() -> None:
    classifier = Classifier(CodesConfig(voucher_pattern=r"^V[0-9]{3}$"))
    assert _kind(classifier, "V123") is Kind.VOUCHER
    assert _kind(classifier, "V123\n") is Kind.VOUCHER  # stripped first
    assert _kind(classifier, "XV1234") is not Kind.VOUCHER


def test_classifier_config_errors_list_every_problem() -> None:
    with pytest.raises(ConfigError) as caught:
        Classifier(
            CodesConfig(
                voucher_pattern="[A-Z",
                giftcard_pattern="GC-(",
                loyalty_pattern="ok",
                token_url_hosts=("shop.piggy.eu", "https://bad/"),
                url_parameters=("identifier", ""),
            )
        )
    problems = caught.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("codes.voucher_pattern: invalid regular expression: ")
    assert problems[1].startswith("codes.giftcard_pattern: invalid regular expression: ")
    assert re.match(r"codes\.token_url_hosts: 'https://bad/' is not a host name", problems[2])
    assert problems[3] == "codes.url_parameters: '' is not a parameter name"
    assert isinstance(caught.value, ValueError)


# ----------------------------------------------------------- Leat's real giftcard codes

LEAT_BALANCE_URL = "https://leat.com/giftcard-balance?hash=41654"  # Leat's giftcards docs


@pytest.mark.parametrize(
    ("url", "value"),
    [
        (LEAT_BALANCE_URL, "41654"),
        ("https://piggy.eu/giftcard-balance?hash=41654", "41654"),  # the older docs' host
        ("https://leat.com/giftcard-balance/?hash=GJ2P725oe&utm=qr", "GJ2P725oe"),
        ("https://shop.example/nl/giftcard-balance?hash=8712345678906", "8712345678906"),
    ],
)
def test_classifier_leat_giftcard_balance_url_is_a_giftcard(
    classifier: Classifier, url: str, value: str
) -> None:
    code = classifier.classify(url)
    assert (code.kind, code.value, code.alternatives) == (Kind.GIFTCARD, value, ())


@pytest.mark.parametrize(
    "url",
    [
        "https://leat.com/giftcard-balance",
        "https://leat.com/giftcard-balance?hash=",
        "https://leat.com/giftcard-balance?hash=a%20b",
    ],
)
def test_classifier_giftcard_balance_url_without_a_hash_is_unknown(
    classifier: Classifier, url: str
) -> None:
    assert _kind(classifier, url) is Kind.UNKNOWN


@pytest.mark.parametrize(
    "text",
    [
        "8712345678906",  # an EAN-13 card number, or a numeric giftcard hash
        "12345678",
        "A1B2C3D4E5F6G7H8J9K0",  # 20 letters and digits: an opaque id, or a hash
        "https://shop.example/card?identifier=8712345678906",
    ],
)
def test_classifier_card_or_giftcard_asks_leat(classifier: Classifier, text: str) -> None:
    code = classifier.classify(text)
    assert (code.kind, code.alternatives) == (Kind.LOYALTY_CARD, (Kind.GIFTCARD,))


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("LC-7F3K9Q2M", Kind.LOYALTY_CARD),
        (HASH, Kind.LOYALTY_CARD),  # 40 characters: longer than any giftcard hash
        ("GC-8H2J4K6L8M", Kind.GIFTCARD),
        ("GJ2P725oe", Kind.GIFTCARD),
        ("SPRING-2X7Q", Kind.VOUCHER),
    ],
)
def test_classifier_unambiguous_values_have_no_alternatives(
    classifier: Classifier, text: str, kind: Kind
) -> None:
    code = classifier.classify(text)
    assert (code.kind, code.alternatives) == (kind, ())


def test_classifier_merchant_patterns_overlapping_ask_leat() -> None:
    classifier = Classifier(
        CodesConfig(giftcard_pattern=r"[0-9]{10}", loyalty_pattern=r"[0-9]{8,12}")
    )
    assert classifier.classify("0123456789").alternatives == (Kind.GIFTCARD,)
    assert classifier.classify("012345678").alternatives == ()
