"""docs/configuration.md documents every setting and every MANDATE_* variable, and matches the code."""

from __future__ import annotations

import re
from pathlib import Path

from server.config_reference import DOC_PATH, render, rows

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "run `make docs` (uv run python -m server.config_reference --write) and commit docs/configuration.md"


def test_every_setting_has_a_meaning_to_document() -> None:
    undocumented = [row.key for row in rows() if not row.meaning]
    assert not undocumented, (
        f"settings without a docstring: {', '.join(undocumented)}. In server/config.py, put a docstring on the line "
        'right below each field (e.g. `lease_seconds: int = 60` then `"""How long ..."""`); it becomes the '
        f"field's row in docs/configuration.md. Then {REGENERATE}."
    )


def test_the_configuration_reference_is_current() -> None:
    assert DOC_PATH.read_text() == render(), f"docs/configuration.md is out of date with server/config.py: {REGENERATE}"


def test_every_mandate_variable_the_code_reads_is_documented() -> None:
    documented = set(re.findall(r"MANDATE_[A-Z0-9_]+", DOC_PATH.read_text()))
    missing: dict[str, str] = {}
    for package in ("server", "tools", "scopes"):
        for source in sorted((ROOT / package).rglob("*.py")):
            for variable in re.findall(r"MANDATE_[A-Z0-9_]+", source.read_text()):
                if variable not in documented:
                    missing.setdefault(variable, str(source.relative_to(ROOT)))
    assert not missing, (
        "undocumented variables: "
        + ", ".join(f"{variable} (in {where})" for variable, where in sorted(missing.items()))
        + ". A setting's variable goes into _ENV, _NESTED_ENV or _LIST_ENV in server/config.py; a variable one "
        f"command reads goes into PROCESS_VARIABLES in server/config_reference.py. Then {REGENERATE}."
    )


def test_the_reference_names_the_issuer_variables_and_the_approval_floor() -> None:
    text = DOC_PATH.read_text()
    for variable in ("MANDATE_ISSUER", "MANDATE_JWKS_URI", "MANDATE_ACCEPTED_TYPES", "MANDATE_SCOPE_CLAIMS"):
        assert f"`{variable}`" in text
    (approval_ttl,) = [line for line in text.splitlines() if line.startswith("| `approvals.ttl_seconds` |")]
    assert ">= 60" in approval_ttl
