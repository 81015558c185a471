"""Packaging: every third-party import is a declared dependency, and a foreign package shadowing Mandate's
top-level names is refused in one line (docs/decisions.md, "Top-level package names")."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
OWN = {"server", "tools", "scopes"}
DEVELOPMENT_ONLY = {"localstripe": "server/providers/localstripe.py", "aiohttp": "server/providers/localstripe.py"}
"""Imported only inside the localstripe runner, a process of its own for `mandate dev --localstripe` and the tests:
localstripe is a development dependency (it brings aiohttp); the server itself never imports them."""


def _imported_top_level_modules() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for package in sorted(OWN):
        for source in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(source.read_text())):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    where = found.setdefault(name.split(".")[0], [])
                    if str(source.relative_to(ROOT)) not in where:
                        where.append(str(source.relative_to(ROOT)))
    return found


def test_every_third_party_module_imported_by_the_packages_is_a_declared_dependency() -> None:
    declared = {
        canonicalize_name(Requirement(line).name)
        for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    }
    providers = packages_distributions()
    undeclared: list[str] = []
    for module, importers in sorted(_imported_top_level_modules().items()):
        if module in OWN or module in sys.stdlib_module_names or importers == [DEVELOPMENT_ONLY.get(module)]:
            continue
        where = ", ".join(importers)
        distributions = {canonicalize_name(name) for name in providers.get(module, [])}
        if not distributions & declared:
            undeclared.append(f"{module} (imported in {where}; from {', '.join(sorted(distributions)) or '?'})")
    assert not undeclared, "declare in pyproject.toml [project] dependencies: " + "; ".join(undeclared)


def test_a_foreign_package_named_like_mandates_is_refused_in_one_line(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "tools"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
    env.update({"PYTHONPATH": str(shadow.parent), "MANDATE_DATA_DIR": str(tmp_path / "data")})
    mandate = str(Path(sys.executable).with_name("mandate"))
    done = subprocess.run([mandate, "scopes"], capture_output=True, text=True, env=env, cwd=tmp_path, check=False)

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert f"tools ({shadow / '__init__.py'}) are not Mandate's" in done.stderr
    assert "environment of its own" in done.stderr
