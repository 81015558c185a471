"""The installed version of Mandate, read from the package metadata (PEP 566) without importing anything heavy."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    try:
        return version("mandate")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without install
        return "0.0.0"
