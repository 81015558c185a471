"""The tool catalog: every tool declared with ``@tool`` in the configured modules, checked against the scope catalog.

A package (the default ``tools``) is searched module by module, so a developer adds a tool by adding a module; a
single module (``examples.custom_tool``) or a file (``examples/custom_tool.py``)
can be named too. Each tool is turned once into its MCP ``Tool`` definition
(MCP specification 2025-11-25, "Tools", ``tools/list``), and once into its wire form (the definition as the SDK
dumps it); what a caller sees is a filter over these, kept per set of granted scopes.

Both forms are built when the catalog is, at start-up, so ``gc.freeze`` (``server.cli.serve``) takes them out of
the collector's sight: a listing of 1,000 tools hands the SDK references to about 100,000 JSON nodes that no
collection walks again.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import mcp_types as types
from pydantic import TypeAdapter

from scopes.catalog import ScopeCatalog
from server.callpath.answers import PendingApproval, Refusal
from server.toolkit import MARK, ToolSpec

IDEMPOTENCY_FIELD = "idempotency_key"


class CatalogConflict(ValueError):
    """Two tools share a name, or a tool requires a scope the scope catalog does not define."""

    def __init__(self, message: str, missing_scopes: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.missing_scopes = tuple(missing_scopes)


def _load_file(path: Path) -> ModuleType:
    """A tool module given as a file path (``examples/custom_tool.py``), loaded under a name of its own."""
    resolved = path.resolve()
    name = f"mandate_tools_{resolved.stem}_{abs(hash(str(resolved))):x}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load tool module from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _modules(names: Iterable[str]) -> Iterator[ModuleType]:
    for name in names:
        if name.endswith(".py"):
            yield _load_file(Path(name))
            continue
        module = importlib.import_module(name)
        yield module
        path = getattr(module, "__path__", None)
        if path is not None:
            for info in sorted(pkgutil.walk_packages(path, prefix=f"{name}."), key=lambda i: i.name):
                yield importlib.import_module(info.name)


def _specs_in(module: ModuleType) -> Iterator[ToolSpec]:
    for value in vars(module).values():
        spec = getattr(value, MARK, None)
        if isinstance(spec, ToolSpec) and getattr(value, "__module__", None) == module.__name__:
            yield spec


def _input_schema(spec: ToolSpec) -> dict[str, Any]:
    schema = spec.args_model.model_json_schema()
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    if spec.has_side_effect:
        schema["properties"][IDEMPOTENCY_FIELD] = {
            "type": "string",
            "minLength": 8,
            "maxLength": 200,
            "description": "Optional. Repeat a call with the same key and arguments to get the first result again "
            "instead of a second effect (e.g. after a timeout).",
        }
    return schema


_ANNOTATIONS = frozenset({"title", "description"})
_SUBSCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_VALUES = frozenset({"const", "enum", "default", "examples"})


def _without_annotations(schema: Any) -> Any:
    """The schema without ``title`` and ``description``: annotations only, so it accepts exactly the same values.

    A property *named* ``title`` stays (the keys of ``properties`` are names, not keywords), and so do literal values
    (``const``, ``enum``, ``default``, ``examples``).
    """
    if isinstance(schema, list):
        return [_without_annotations(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    compact: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        if key in _VALUES:
            compact[key] = value
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            compact[key] = {name: _without_annotations(sub) for name, sub in value.items()}
        else:
            compact[key] = _without_annotations(value)
    return compact


def _compact(schema: Any) -> Any:
    """The same schema in fewer JSON nodes: ``anyOf`` of a single type and ``null`` as a ``type`` list (JSON Schema
    2020-12 section 6.1.1), and ``additionalProperties: true``, the default (section 10.3.2.3), left out.

    Both rewrites accept exactly the values the original accepts. Keys of subschema maps are names, left as they are.
    """
    if isinstance(schema, list):
        return [_compact(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    compact: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _VALUES:
            compact[key] = value
        elif key == "additionalProperties" and value is True:
            continue
        elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
            compact[key] = {name: _compact(sub) for name, sub in value.items()}
        else:
            compact[key] = _compact(value)
    branches = compact.get("anyOf")
    if (
        "type" not in compact
        and isinstance(branches, list)
        and len(branches) == 2
        and all(isinstance(branch, dict) and branch.keys() == {"type"} for branch in branches)
    ):
        types_ = [branch["type"] for branch in branches]
        if "null" in types_ and all(isinstance(t, str) for t in types_) and types_[0] != types_[1]:
            del compact["anyOf"]
            compact["type"] = types_
    return compact


_SHARED_SHAPES = frozenset({Refusal.__name__, PendingApproval.__name__})


def _output_schema(spec: ToolSpec) -> dict[str, Any]:
    """What ``structuredContent`` can hold: the result, a refusal, or (with a side effect) a pending approval.

    Refusals are ``isError`` results that still carry structured fields for the model; clients such as the MCP
    Inspector validate them against the schema too, so the schema names every shape the tool can answer with.
    The refusal and pending-approval shapes are the same in every tool, so they go without their titles and
    descriptions (the result and the tool's description say what they mean): with them, they were most of the bytes
    of a large tools/list. Their optional fields are written as ``type`` lists rather than ``anyOf`` branches
    (:func:`_compact`): every JSON node of a definition is copied several times over by each listing. What the
    schema accepts does not change.
    """
    either: Any = spec.result_model | Refusal if spec.read_only else spec.result_model | PendingApproval | Refusal
    schema = TypeAdapter[Any](either).json_schema()
    defs = schema.get("$defs", {})
    for name in _SHARED_SHAPES & defs.keys():
        if name != spec.result_model.__name__:
            defs[name] = _compact(_without_annotations(defs[name]))
    schema["type"] = "object"
    return schema


def _mcp_tool(spec: ToolSpec) -> types.Tool:
    meta = {"io.mandate/requires": {"mode": spec.requires.mode, "scopes": list(spec.requires.scopes)}}
    return types.Tool(
        name=spec.name,
        title=spec.title,
        description=spec.description,
        input_schema=_input_schema(spec),
        output_schema=_output_schema(spec),
        annotations=types.ToolAnnotations(
            read_only_hint=spec.read_only,
            destructive_hint=spec.destructive,
            idempotent_hint=spec.idempotent,
            open_world_hint=spec.open_world,
        ),
        meta=meta,
    )


def wire_form(definition: types.Tool) -> dict[str, Any]:
    """A definition as the SDK itself dumps a handler's tools/list result (``mcp.server.runner._dump_result``)."""
    return definition.model_dump(by_alias=True, mode="json", exclude_none=True)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    spec: ToolSpec
    definition: types.Tool
    wire: dict[str, Any]
    """``definition`` dumped once; shared by every listing, so never to be changed in place."""


class ToolCatalog:
    """The tools this server publishes, in a stable order."""

    def __init__(self, specs: Sequence[ToolSpec], scopes: ScopeCatalog) -> None:
        entries: dict[str, CatalogEntry] = {}
        for spec in specs:
            if spec.name in entries:
                raise CatalogConflict(f"two tools are named {spec.name!r}")
            unknown = [scope for scope in spec.requires.scopes if scope not in scopes.scopes]
            if unknown:
                raise CatalogConflict(
                    f"tool {spec.name!r} requires scope(s) {', '.join(unknown)} missing from the scope catalog",
                    unknown,
                )
            definition = _mcp_tool(spec)
            entries[spec.name] = CatalogEntry(spec, definition, wire_form(definition))
        self._entries = dict(sorted(entries.items()))
        self._wire = {id(entry.definition): entry.wire for entry in self._entries.values()}
        self._visible: OrderedDict[frozenset[str], tuple[types.Tool, ...]] = OrderedDict()
        self.scopes = scopes

    @classmethod
    def from_modules(cls, modules: Iterable[str], scopes: ScopeCatalog) -> ToolCatalog:
        specs: list[ToolSpec] = []
        for module in _modules(modules):
            specs.extend(_specs_in(module))
        return cls(specs, scopes)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def get(self, name: str) -> CatalogEntry | None:
        return self._entries.get(name)

    VISIBLE_SETS = 64
    """How many distinct sets of granted scopes keep their filtered list (least recently listed goes first)."""

    def visible_to(self, granted: frozenset[str]) -> list[types.Tool]:
        """The definitions a caller holding ``granted`` may see, in catalog order: a new list each time.

        The filter depends on the scopes alone, so its result is kept per distinct set of scopes (a replica's
        callers hold few distinct sets); the scopes themselves are the key, so two callers share an entry only
        when they hold exactly the same scopes.
        """
        visible = self._visible.get(granted)
        if visible is None:
            visible = tuple(
                entry.definition for entry in self._entries.values() if entry.spec.requires.is_met_by(granted)
            )
            self._visible[frozenset(granted)] = visible
            if len(self._visible) > self.VISIBLE_SETS:
                self._visible.popitem(last=False)
        else:
            self._visible.move_to_end(granted)
        return list(visible)

    def wire_forms(self, tools: Iterable[types.Tool]) -> list[dict[str, Any]]:
        """Each definition's wire form: the one built with the catalog for its own definitions, a fresh dump for any
        other (a definition is matched by identity, never by name, so a changed copy is never answered stale)."""
        wire = self._wire
        return [wire.get(id(tool)) or wire_form(tool) for tool in tools]

    def tools_needing(self, scope: str) -> list[str]:
        return [entry.spec.name for entry in self._entries.values() if scope in entry.spec.requires.scopes]
