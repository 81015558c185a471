"""A developer adds a tool with a new scope: without the scope in the catalog, one line names the file to edit;
with it there (e.g. in the copy `mandate init` writes), the tool is served."""

from __future__ import annotations

from pathlib import Path

from tests.cli.support import mandate

TOOL = '''
from pydantic import BaseModel

from scopes.requirement import all_of
from server.toolkit import StrictArgs, ToolContext, tool


class PointsArgs(StrictArgs):
    customer_id: str
    points: int


class Granted(BaseModel):
    points: int


@tool(requires=all_of("points:grant"))
async def points_grant(args: PointsArgs, ctx: ToolContext) -> Granted:
    """Grant loyalty points to a customer."""
    return Granted(points=args.points)
'''


def test_a_tool_whose_scope_is_not_in_the_catalog_names_the_catalog_file_to_edit(tmp_path: Path) -> None:
    module = tmp_path / "points_tool.py"
    module.write_text(TOOL)
    done = mandate("scopes", data_dir=tmp_path / "data", env={"MANDATE_TOOL_MODULES": f"tools,{module}"})

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "tool 'points_grant' requires scope(s) points:grant missing from the scope catalog" in lines[0]
    assert "scopes/catalog.toml" in lines[0] and '[scopes."points:grant"]' in lines[0]


def test_with_the_scope_added_to_an_initialised_catalog_the_tool_is_served(tmp_path: Path) -> None:
    module = tmp_path / "points_tool.py"
    module.write_text(TOOL)
    site = tmp_path / "site"
    assert mandate("init", str(site), data_dir=tmp_path / "data").returncode == 0
    with (site / "catalog.toml").open("a") as catalog:
        catalog.write('\n[scopes."points:grant"]\ndescription = "Grant loyalty points."\n')
    env = {"MANDATE_CONFIG": str(site / "mandate.toml"), "MANDATE_TOOL_MODULES": f"tools,{module}"}

    done = mandate("scopes", data_dir=tmp_path / "data", env=env)
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("points:grant")]
    assert "points_grant" in row
