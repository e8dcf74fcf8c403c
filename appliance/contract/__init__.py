"""JSON Schemas (draft 2020-12) of every MQTT payload, and validation against them.

Each `<name>.schema.json` in this package describes the payload of one topic (see
`docs/asyncapi.yaml`). `validate()` checks `format` keywords too (uuid, date-time).
"""

from __future__ import annotations

import functools
import json
import logging
import re
from datetime import datetime
from importlib import resources
from itertools import islice
from typing import Any, cast

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource

log = logging.getLogger(__name__)

MAX_ERRORS = 100

_SUFFIX = ".schema.json"
# ASCII digits only (`\d` matches any Unicode digit); a fraction of any length, of which
# `fromisoformat` reads six
_RFC3339 = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]([0-9]{2}:[0-9]{2}:[0-9]{2})(\.[0-9]+)?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)


def is_date_time(instance: object) -> bool:
    """True unless `instance` is a string that is not an RFC 3339 date-time (with offset)."""
    return not isinstance(instance, str) or date_time(instance) is not None


def date_time(text: str) -> datetime | None:
    """`text` as an RFC 3339 date-time with an offset (None: it is not one)."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    date, clock, fraction, offset = match.groups()
    offset = "+00:00" if offset in "Zz" else offset
    try:
        return datetime.fromisoformat(f"{date}T{clock}{(fraction or '')[:7]}{offset}")
    except ValueError:
        return None


def _format_checker() -> FormatChecker:
    """jsonschema's checkers (uuid, ...) with our own date-time check.

    jsonschema checks date-time only when the optional rfc3339-validator is installed and
    otherwise passes every string silently; ours does not depend on it.
    """
    checker = FormatChecker()
    checker.checks("date-time")(is_date_time)
    return checker


def names() -> list[str]:
    """The names of all schemas in the contract, sorted (e.g. `scan`, `state`)."""
    return sorted(
        entry.name.removesuffix(_SUFFIX)
        for entry in resources.files(__package__).iterdir()
        if entry.name.endswith(_SUFFIX)
    )


@functools.cache
def _load(name: str) -> dict[str, Any]:
    if name not in names():
        raise KeyError(f"no contract schema named {name!r}; known: {', '.join(names())}")
    text = resources.files(__package__).joinpath(name + _SUFFIX).read_text(encoding="utf-8")
    return cast(dict[str, Any], json.loads(text))


def schema(name: str) -> dict[str, Any]:
    """The schema `name` as a fresh dict (raises KeyError for an unknown name)."""
    return json.loads(json.dumps(_load(name)))  # type: ignore[no-any-return]


@functools.cache
def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` compiled so that a final `$` ends the string, as in ECMA-262 (JSON Schema's
    regex dialect): Python's `$` also matches before a final newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def _pattern(validator: Any, pattern: str, instance: object, schema: Any) -> Any:
    """The `pattern` keyword with ECMA-262's `$`: "id-1\\n" no longer passes
    `^[\\x21-\\x7e]+$` (the contract's printable-ASCII ids)."""
    if isinstance(instance, str) and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {"pattern": _pattern})


@functools.cache
def _registry() -> Registry[Any]:
    """Every schema under its `$id`, for `$ref`s from one file into another."""
    loaded = [_load(name) for name in names()]
    return Registry().with_resources(
        (s["$id"], Resource.from_contents(s)) for s in loaded)


@functools.cache
def _validator(name: str) -> Any:
    """The validator of schema `name`, or of a part of one: `name#/json/pointer`."""
    file, hash_, pointer = name.partition("#")
    target = {"$ref": f"{_load(file)['$id']}#{pointer}"} if hash_ else _load(name)
    return _Validator(target, format_checker=_format_checker(), registry=_registry())


def validate(name: str, payload: object) -> None:
    """Check `payload` against schema `name` (or a part of one: `name#/$defs/x`); raise
    `jsonschema.ValidationError` if it fails.

    The best of the first `MAX_ERRORS` errors is raised: a hostile request with 50,000 bad
    array items would otherwise cost a second to collect them all.
    """
    error = best_match(islice(_validator(name).iter_errors(payload), MAX_ERRORS))
    if error is not None:
        raise error


def validate_reply(verb: str, reply: object) -> None:
    """Check the `reply` to a request against `response` and, for a command answered `ok` or
    `accepted`, its `data` against `command_reply` (`$defs/<verb>`, or `$defs/accepted`;
    an order's data is in `response` itself)."""
    validate("response", reply)
    status = reply.get("status") if isinstance(reply, dict) else None
    part = {"ok": verb, "accepted": "accepted"}.get(str(status))
    if part is not None and part in _load("command_reply")["$defs"]:
        validate(f"command_reply#/$defs/{part}", cast(dict[str, Any], reply)["data"])


def explain(error: ValidationError) -> str:
    """A schema refusal a POS developer can act on: where, and what the contract wants
    (jsonschema's own messages print Python reprs of the schema for `not` and `oneOf`)."""
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    own = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "not" and own.get("description"):  # a field the contract forbids
        return f"{where}: {own['description']}"
    if error.validator in ("oneOf", "anyOf") and isinstance(error.validator_value, list):
        choices = error.validator_value
        labels = [_label(choice) for choice in choices]
        if all(labels):
            fits = [i for i, choice in enumerate(choices) if isinstance(error.instance, dict)
                    and choice.get("required") and set(choice["required"]) <= error.instance.keys()]
            if len(fits) == 1:  # the one alternative it meant: what is wrong inside it
                inside = best_match(e for e in error.context or ()
                                    if e.relative_schema_path[0] == fits[0])
                if inside is not None:
                    return explain(inside)
            many = "exactly one" if error.validator == "oneOf" else "at least one"
            return f"{where}: give {many} of {', '.join(map(str, labels))}"
        deepest = best_match(error.context or ())
        if deepest is not None:
            return explain(deepest)
    if error.validator == "format":
        shown = repr(error.instance)
        shown = shown if len(shown) <= 60 else shown[:60] + "..."
        return f"{where}: {shown} is not a valid {error.validator_value}"
    return f"{where}: {error.message}"


def _label(choice: object) -> str | None:
    """How `explain` names one alternative of a oneOf / anyOf: its required keys, or null."""
    if not isinstance(choice, dict):
        return None
    required = choice.get("required")
    if isinstance(required, list) and required:
        return " and ".join(map(str, required))
    return "null" if choice.get("type") == "null" else None
