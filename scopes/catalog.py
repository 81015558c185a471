"""The scope catalog and the development agents, as data files that security teams own.

``catalog.toml`` names every OAuth scope (RFC 6749 section 3.3) with a description; ``agents.toml`` names
development agents and their scope sets for the local issuer. Both are validated on load by pydantic models, and a
failure names the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

DATA_DIR = Path(__file__).parent
DEFAULT_CATALOG = DATA_DIR / "catalog.toml"
DEFAULT_AGENTS = DATA_DIR / "agents.toml"

_SCOPE_PATTERN = r"^[a-z][a-z0-9_.-]*(:[a-z0-9_.-]+)*$"
ScopeName = Annotated[str, StringConstraints(pattern=_SCOPE_PATTERN, max_length=100)]


class CatalogError(ValueError):
    """A catalog or agents file is missing, is not TOML, or does not fit its model."""


class ScopeEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: Annotated[str, StringConstraints(min_length=1, max_length=500)]


class ScopeCatalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    scopes: Mapping[ScopeName, ScopeEntry]


class AgentEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    description: str = ""
    scopes: Annotated[list[ScopeName], Field(min_length=1)]
    tenant: str | None = None
    human: bool = False
    """A person, not an agent: development tokens for it carry the approver marker (``mandate_approver``)."""


class AgentBook(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    agents: Mapping[Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]*$")], AgentEntry]


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise CatalogError(f"{path}: file not found") from exc
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML: {exc}") from exc


def _explain(path: Path, exc: ValidationError) -> CatalogError:
    lines = [f"{path}: invalid"]
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        lines.append(f"  {where}: {error['msg']}")
    return CatalogError("\n".join(lines))


def load_catalog(path: Path = DEFAULT_CATALOG) -> ScopeCatalog:
    try:
        return ScopeCatalog.model_validate(_read_toml(path))
    except ValidationError as exc:
        raise _explain(path, exc) from None


def load_agents(path: Path = DEFAULT_AGENTS, catalog: ScopeCatalog | None = None) -> AgentBook:
    try:
        book = AgentBook.model_validate(_read_toml(path))
    except ValidationError as exc:
        raise _explain(path, exc) from None
    if catalog is not None:
        for name, agent in book.agents.items():
            unknown = [scope for scope in agent.scopes if scope not in catalog.scopes]
            if unknown:
                raise CatalogError(f"{path}: agents.{name}.scopes: unknown scope(s) {', '.join(unknown)}")
    return book


def is_scope_name(value: str) -> bool:
    return re.fullmatch(_SCOPE_PATTERN, value) is not None
