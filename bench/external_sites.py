"""The two servers of the external-effects comparison, as ``bench.serve`` runs them (kinds ``bare_external`` and
``mandate_external``): the same stack as every other site (uvicorn, uvloop, httptools, JSON responses), the
provider read from the environment (``bench.external_provider``)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.serve import SiteSpec
    from server.app import Mandate
    from server.config import Settings

KINDS = ("bare_external", "mandate_external")


def external_settings(data_dir: Path, *, database_url: str | None = None) -> Settings:
    """Mandate's refund settings (``bench.mandate_site.refund_settings``) with ``[payments]`` from the environment."""
    from bench.external_provider import payments_from_env
    from bench.mandate_site import refund_settings

    settings = refund_settings(data_dir, database_url=database_url)
    return settings.model_copy(update={"payments": payments_from_env()})


async def open_external_mandate(settings: Settings) -> Mandate:
    """The running parts with the payments provider, the bench order seeded and linked to a payment there."""
    from bench.external_provider import link_bench_order
    from bench.mandate_site import open_refund_mandate

    mandate = await open_refund_mandate(settings)
    try:
        if "payments" not in mandate.enforcer.providers:
            raise RuntimeError("Mandate opened without its payments provider")
        await link_bench_order(mandate.db, settings.payments)
    except BaseException:
        await mandate.aclose()
        raise
    return mandate


@contextlib.asynccontextmanager
async def external_apps(specs: Sequence[SiteSpec]) -> AsyncIterator[list[Any]]:
    """The ASGI app of each spec of one group of an external kind, closed afterwards."""
    first = specs[0]
    if first.kind == "bare_external":
        from mcp.server.transport_security import TransportSecuritySettings

        from bench.bare_external import bare_external_server
        from server.storage.database import sqlite_url_for

        url = first.database_url or sqlite_url_for(Path(first.data_dir))
        security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"])
        async with bare_external_server(url) as server:
            yield [
                server.streamable_http_app(
                    json_response=True, stateless_http=spec.stateless, transport_security=security, host="127.0.0.1"
                )
                for spec in specs
            ]
        return
    if first.kind != "mandate_external":
        raise ValueError(f"not an external-effects kind: {first.kind!r}")
    from server.app import build_http_app

    settings = external_settings(Path(first.data_dir), database_url=first.database_url)
    mandate = await open_external_mandate(settings)
    try:
        yield [
            build_http_app(
                dataclasses.replace(mandate, settings=settings.model_copy(update={"stateless": spec.stateless}))
            )
            for spec in specs
        ]
    finally:
        await mandate.aclose()
