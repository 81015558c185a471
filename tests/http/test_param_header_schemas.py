"""The schema the SDK checks a tools/call's ``Mcp-Param-*`` headers against: the tool's own when it may declare a
header, a bare object schema otherwise, and the SDK's check answers the same either way."""

from __future__ import annotations

from typing import Any

from mcp.shared.inbound import validate_mcp_param_headers

from scopes.catalog import DEFAULT_CATALOG, load_catalog
from server.catalog import ToolCatalog
from server.mcp_server import NO_HEADERS, header_schema

DECLARING: dict[str, Any] = {
    "type": "object",
    "properties": {"region": {"type": "string", "x-mcp-header": "Region"}, "amount": {"type": "string"}},
}


def test_a_schema_that_declares_a_header_anywhere_is_checked_as_it_is() -> None:
    nested = {"type": "object", "properties": {"order": DECLARING}}
    named = {"type": "object", "properties": {"x-mcp-header": {"type": "string"}}}  # a property of that name
    for schema in (DECLARING, nested, named):
        assert header_schema(schema) is schema


def test_the_sdk_check_answers_the_same_for_every_catalog_tool_and_its_header_schema() -> None:
    catalog = ToolCatalog.from_modules(["tools"], load_catalog(DEFAULT_CATALOG))
    assert catalog.get("refund_create") is not None
    header_sets: list[dict[str, str]] = [
        {},
        {"mcp-param-region": "eu"},
        {"mcp-param-order_id": "ord_1", "mcp-param-amount": "1.00"},
    ]
    for entry in catalog:
        schema = entry.definition.input_schema
        assert header_schema(schema) is NO_HEADERS  # no tool of the catalog declares a header
        arguments = {name: "x" for name in schema.get("properties", {})}
        for headers in header_sets:
            assert validate_mcp_param_headers(NO_HEADERS, arguments, headers) == validate_mcp_param_headers(
                schema, arguments, headers
            )
    assert validate_mcp_param_headers(DECLARING, {"region": "eu"}, {}) is not None  # what a declaration changes
