"""Sensitive arguments never reach the record: declared fields are replaced, and emails and free text are redacted
by default; the digest of the full arguments is kept."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from server.audit.redaction import (
    REDACTED,
    REDACTED_EMAIL,
    REDACTED_TEXT,
    arguments_digest,
    default_sensitive_fields,
    redact,
)
from server.toolkit import StrictArgs


def test_declared_fields_are_replaced_and_identifiers_kept() -> None:
    arguments = {"order_id": "ord_5001", "amount": "12.50", "currency": "EUR", "reason": "x", "limit": 5}
    assert redact(arguments, frozenset({"reason"})) == {**arguments, "reason": REDACTED}


def test_emails_are_redacted_even_when_not_declared_and_nested() -> None:
    arguments = {"contact": "ada@example.com", "notes": {"cc": ["grace@example.com", "ok"]}, "to": "x<bob@a.io>"}
    assert redact(arguments, frozenset()) == {
        "contact": REDACTED_EMAIL,
        "notes": {"cc": [REDACTED_EMAIL, "ok"]},
        "to": REDACTED_EMAIL,
    }


def test_free_text_is_redacted_by_default() -> None:
    arguments = {"note": "customer says the parcel was wet", "long": "x" * 65, "status": "pending", "n": 3}
    assert redact(arguments, frozenset()) == {"note": REDACTED_TEXT, "long": REDACTED_TEXT, "status": "pending", "n": 3}


def test_the_digest_covers_the_full_arguments_in_canonical_form() -> None:
    assert arguments_digest({"b": 1, "a": "x"}) == arguments_digest({"a": "x", "b": 1})
    assert arguments_digest({"a": "x"}) != arguments_digest({"a": "y"})


class _Args(StrictArgs):
    order_id: Annotated[str, Field(pattern=r"^ord_\d+$")]
    status: Literal["pending", "shipped"] | None = None
    reason: str
    note: str | None = None
    new_email: Annotated[str, Field(pattern=r"^.+@.+$")]
    limit: int = 5


def test_an_argument_model_names_its_free_text_and_email_fields_as_sensitive_by_default() -> None:
    assert default_sensitive_fields(_Args) == frozenset({"reason", "note", "new_email"})
