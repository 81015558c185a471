"""``mandate scopes``: the scope -> tool table that security teams read."""

from __future__ import annotations

import argparse
from typing import Any

from server.config import Settings


def cmd_scopes(args: argparse.Namespace, settings: Settings) -> int:
    from server.app import load_tool_catalog

    catalog = load_tool_catalog(settings)
    rows = [
        (scope, ", ".join(catalog.tools_needing(scope)) or "-", entry.description)
        for scope, entry in catalog.scopes.scopes.items()
    ]
    widths = [max(len(r[i]) for r in [("SCOPE", "TOOLS", "DESCRIPTION"), *rows]) for i in range(2)]
    for scope, tools, description in [("SCOPE", "TOOLS", "DESCRIPTION"), *rows]:
        print(f"{scope:<{widths[0]}}  {tools:<{widths[1]}}  {description}")
    return 0


def register(sub: Any) -> None:
    scopes = sub.add_parser("scopes", help="print the scope -> tool table")
    scopes.set_defaults(handler=cmd_scopes)
