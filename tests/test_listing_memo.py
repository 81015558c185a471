"""The tools/list memo (server/mcp_server.py): the same wire form as the SDK's own dump, per visible list."""

from __future__ import annotations

from typing import Any

import mcp_types as types

from server.mcp_server import ListingMemo


def _tool(name: str) -> types.Tool:
    return types.Tool(
        name=name,
        description=f"the {name} tool",
        input_schema={"type": "object", "properties": {"title": {"type": "string", "title": "Title"}}},
        output_schema={"type": "object", "properties": {"id": {"type": "string"}}},
        annotations=types.ToolAnnotations(read_only_hint=True),
        meta={"io.mandate/requires": {"mode": "all_of", "scopes": ["a:read"]}},
    )


def _dump(tools: list[types.Tool]) -> dict[str, Any]:
    return types.ListToolsResult(tools=tools).model_dump(by_alias=True, mode="json", exclude_none=True)


def test_the_memo_answers_what_the_model_would_dump() -> None:
    tools = [_tool("a"), _tool("b")]
    memo = ListingMemo()
    assert memo.result(tools) == _dump(tools)
    assert memo.result(tools) == _dump(tools)  # from the memo this time
    assert memo.result(tools[:1]) == _dump(tools[:1])


def test_each_answer_is_a_mapping_of_its_own() -> None:
    tools = [_tool("a")]
    memo = ListingMemo()
    first = memo.result(tools)
    first["_meta"] = {"stamped": True}
    first["tools"].append({"name": "extra"})
    assert memo.result(tools) == _dump(tools)


def test_a_different_definition_under_the_same_name_is_a_different_entry() -> None:
    memo = ListingMemo()
    assert memo.result([_tool("a")])["tools"][0]["description"] == "the a tool"
    changed = _tool("a").model_copy(update={"description": "changed"})
    assert memo.result([changed])["tools"][0]["description"] == "changed"


def test_the_memo_keeps_only_the_most_recent_lists() -> None:
    memo = ListingMemo(size=2)
    tools = [_tool(name) for name in "abc"]
    for tool in tools:
        memo.result([tool])
    assert len(memo._entries) == 2
    assert memo.result([tools[0]]) == _dump([tools[0]])
