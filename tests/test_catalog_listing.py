"""The listing path (server/catalog.py, server/mcp_server.py): each tool's wire form dumped once with the catalog, the
filter kept per set of granted scopes, and a result the same as the SDK's own dump of the visible definitions."""

from __future__ import annotations

from typing import Any

import mcp_types as types

from scopes.catalog import load_catalog
from server.catalog import ToolCatalog
from server.mcp_server import listing_result


def _catalog() -> ToolCatalog:
    return ToolCatalog.from_modules(["tools"], load_catalog())


def _dump(tools: list[types.Tool]) -> dict[str, Any]:
    return types.ListToolsResult(tools=tools).model_dump(by_alias=True, mode="json", exclude_none=True)


SUPPORT = frozenset({"orders:read", "customers:read"})
EVERYTHING = frozenset(load_catalog().scopes)


def test_a_listing_answers_what_the_sdk_would_dump_for_the_visible_definitions() -> None:
    catalog = _catalog()
    for granted in (SUPPORT, EVERYTHING, frozenset()):
        visible = catalog.visible_to(granted)
        assert listing_result(catalog, visible) == _dump(visible)


def test_the_filter_is_by_scope_and_each_caller_gets_a_list_of_its_own() -> None:
    catalog = _catalog()
    support = catalog.visible_to(SUPPORT)
    assert support and len(support) < len(catalog)
    assert all(catalog.get(tool.name).spec.requires.is_met_by(SUPPORT) for tool in support)  # type: ignore[union-attr]
    support.clear()
    assert catalog.visible_to(SUPPORT)
    assert catalog.visible_to(frozenset()) == []
    first = listing_result(catalog, catalog.visible_to(EVERYTHING))
    first["tools"].append({"name": "extra"})
    first["_meta"] = {"stamped": True}
    assert listing_result(catalog, catalog.visible_to(EVERYTHING)) == _dump(catalog.visible_to(EVERYTHING))


def test_the_catalogs_wire_forms_are_handed_out_not_dumped_again() -> None:
    catalog = _catalog()
    listing = listing_result(catalog, catalog.visible_to(EVERYTHING))
    assert [id(tool) for tool in listing["tools"]] == [id(entry.wire) for entry in catalog]


def test_a_definition_that_is_not_the_catalogs_own_is_dumped_as_it_is() -> None:
    catalog = _catalog()
    original = catalog.visible_to(EVERYTHING)[0]
    changed = original.model_copy(update={"description": "changed"})
    listing = listing_result(catalog, [changed])
    assert listing["tools"][0]["description"] == "changed"
    assert listing == _dump([changed])


def test_the_filter_is_kept_for_a_bounded_number_of_scope_sets() -> None:
    catalog = _catalog()
    for index in range(ToolCatalog.VISIBLE_SETS + 10):
        catalog.visible_to(SUPPORT | {f"unknown:{index}"})
    assert len(catalog._visible) == ToolCatalog.VISIBLE_SETS
    assert catalog.visible_to(SUPPORT) == [
        entry.definition for entry in catalog if entry.spec.requires.is_met_by(SUPPORT)
    ]


REFUSALS: list[Any] = [
    {"status": "denied", "code": "cap_exceeded", "message": "m"},
    {"status": "denied", "code": "c", "message": "m", "rule": None, "policy_version": "7", "audit_id": None},
    {"status": "failed", "code": "c", "message": "m", "rule": "r", "would_allow": ["x"], "details": {"a": [1]}},
    {"status": "pending_approval", "approval_id": "a", "message": "m", "expires_at": "t", "check_with": "c"},
    {"status": "pending_approval", "approval_id": "a", "message": "m", "expires_at": "t", "check_with": "c", "rule": 3},
    {"status": "denied", "code": "c", "message": "m", "rule": 12},
    {"status": "denied", "code": "c", "message": "m", "audit_id": ["a"]},
    {"status": "denied", "code": "c", "message": "m", "details": "not an object"},
    {"status": "denied", "code": "c"},
    {"status": "nope", "code": "c", "message": "m"},
    "text",
]


def test_the_compact_refusal_and_pending_shapes_accept_exactly_what_pydantic_s_schema_accepts() -> None:
    from jsonschema import Draft202012Validator
    from pydantic import TypeAdapter

    from server.callpath.answers import PendingApproval, Refusal

    for model in (Refusal, PendingApproval):
        original = Draft202012Validator(TypeAdapter(model).json_schema())
        for entry in _catalog():
            schema = entry.definition.output_schema
            assert schema is not None
            if model.__name__ not in schema["$defs"]:
                continue
            compact = Draft202012Validator({**schema["$defs"][model.__name__], "$defs": schema["$defs"]})
            for instance in REFUSALS:
                assert compact.is_valid(instance) == original.is_valid(instance), (entry.spec.name, instance)
