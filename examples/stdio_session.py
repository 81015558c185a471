"""A stdio session: the client starts ``mandate serve --transport stdio`` with the token in MANDATE_TOKEN.

    make setup && uv run mandate seed
    MANDATE_TOKEN=$(uv run mandate token mint --agent support) MANDATE_DEV_ISSUER=1 \\
        uv run python examples/stdio_session.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters


async def session(env: dict[str, str]) -> list[str]:
    mandate = str(Path(sys.executable).with_name("mandate"))
    parameters = StdioServerParameters(command=mandate, args=["serve", "--transport", "stdio"], env=env)
    async with Client(parameters, mode="legacy") as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        print("tools:", ", ".join(tools) or "(none: see the server's message above)")
        if "customer_lookup" in tools:
            customer = await client.call_tool("customer_lookup", {"customer_id": "cus_1002"})
            print("cus_1002:", customer.structured_content)
    return tools


if __name__ == "__main__":
    anyio.run(session, dict(os.environ))
