"""Benchmarked servers in a process of their own: ``python -m bench.serve SPECS_JSON FD...`` (see bench.servers).

The parent binds the listening sockets and passes their file descriptors, so the ports are known before the process
starts. One process serves a *group* of sites: the stateless and the stateful variant of one server share its
process (and, for Mandate, one set of parts: database, catalog, verifier, enforcer), which halves the start-up cost
of a run; the idle site costs nothing while the other is measured. Both sides run the same stack: uvicorn on uvloop
with httptools. The process prints ``READY`` once every site serves, and exits on SIGINT. With ``profile`` set,
SIGUSR1 starts pyinstrument on the event loop's thread and SIGUSR2 stops it and writes the profile.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

SERVER_STACK = "uvicorn (uvloop event loop, httptools HTTP parser)"


@dataclass(frozen=True)
class SiteSpec:
    """What one benchmarked server is: which side, which catalog, which HTTP mode, which database."""

    kind: str  # "bare", "bare_auth" (the SDK's own bearer check), "bare_refund", "bare_refund_direct" (SQLite only),
    # "mandate" or "mandate_refund"; "bare_external" and "mandate_external": refunds at a payments provider
    # (bench.external_sites)
    tools: int
    stateless: bool
    data_dir: str
    port: int
    database_url: str | None = None
    profile: str | None = None
    profile_interval: float = 0.0005
    patches: tuple[str, ...] = ()
    """Candidate fixes to apply in this process (bench.patches); empty for the published figures."""
    group: str = ""
    """Sites with the same group share a process (and must agree on kind, tools, data_dir, database and patches)."""
    source: str = ""
    """Serve from this checkout instead of this one (``bench.ab``: the code before a change, in the same run)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SiteSpec:
        return cls(**{**data, "patches": tuple(data.get("patches", ()))})


@contextlib.asynccontextmanager
async def group_apps(specs: Sequence[SiteSpec]) -> AsyncIterator[list[Any]]:
    """The ASGI app of each spec of one group (and, for Mandate, the parts they share), closed afterwards."""
    first = specs[0]
    if first.kind in ("bare_external", "mandate_external"):  # refunds at a payments provider (bench.bench_external)
        from bench.external_sites import external_apps

        async with external_apps(specs) as apps:
            yield apps
        return
    if first.kind in ("bare_refund", "bare_refund_direct"):
        from mcp.server.transport_security import TransportSecuritySettings

        from bench.bare_refund import bare_refund_server
        from bench.bare_refund_direct import bare_refund_direct_server
        from server.storage.database import sqlite_url_for

        url = first.database_url or sqlite_url_for(Path(first.data_dir))
        security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"])
        serve_refunds = bare_refund_direct_server if first.kind == "bare_refund_direct" else bare_refund_server
        async with serve_refunds(url) as server:
            yield [
                server.streamable_http_app(
                    json_response=True, stateless_http=spec.stateless, transport_security=security, host="127.0.0.1"
                )
                for spec in specs
            ]
        return
    if first.kind in ("mandate", "mandate_refund"):
        from bench.mandate_site import bench_settings, open_bench_mandate, open_refund_mandate, refund_settings
        from server.app import build_http_app

        if first.kind == "mandate_refund":
            settings = refund_settings(Path(first.data_dir), database_url=first.database_url)
            mandate = await open_refund_mandate(settings)
        else:
            settings = bench_settings(Path(first.data_dir), tools=first.tools, database_url=first.database_url)
            mandate = await open_bench_mandate(settings)
        try:
            yield [
                build_http_app(
                    dataclasses.replace(mandate, settings=settings.model_copy(update={"stateless": spec.stateless}))
                )
                for spec in specs
            ]
        finally:
            await mandate.aclose()
        return

    from mcp.server.transport_security import TransportSecuritySettings

    from bench.bare import build_bare

    owner = None
    verifier = None
    if first.kind == "bare_auth":
        from bench.mandate_site import bench_settings, open_bench_mandate

        owner = await open_bench_mandate(bench_settings(Path(first.data_dir), tools=first.tools))
        verifier = owner.verifier
    elif first.kind != "bare":
        raise ValueError(f"unknown server kind {first.kind!r}")
    security = TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=["127.0.0.1:*"])
    apps = [
        build_bare(spec.tools, verifier=verifier, base_url="http://127.0.0.1").streamable_http_app(
            json_response=True, stateless_http=spec.stateless, transport_security=security, host="127.0.0.1"
        )
        for spec in specs
    ]
    try:
        yield apps
    finally:
        if owner is not None:
            await owner.aclose()


async def serve_group(specs: Sequence[SiteSpec], sockets: Sequence[socket.socket], *, on_ready: Any = None) -> None:
    """Serve each spec on its socket until SIGINT (or ``should_exit``); ``on_ready(servers)`` once all serve."""
    async with group_apps(specs) as apps:
        servers = [
            uvicorn.Server(
                uvicorn.Config(
                    app,
                    loop="none",
                    http="httptools",
                    lifespan="on",
                    log_level="warning",
                    access_log=False,
                    server_header=False,
                    timeout_graceful_shutdown=2,
                    # the A B A B alternation leaves a client's connection idle while the other side runs
                    timeout_keep_alive=600,
                )
            )
            for app in apps
        ]
        tasks = [
            asyncio.ensure_future(server.serve(sockets=[sock])) for server, sock in zip(servers, sockets, strict=True)
        ]
        while not all(server.started for server in servers) and not any(task.done() for task in tasks):  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # uvicorn exposes a flag, not an event
        if on_ready is not None and all(server.started for server in servers):
            on_ready(servers)
        try:
            await asyncio.gather(*tasks)
        finally:
            for server in servers:  # one site stopping (a signal) stops the group
                server.should_exit = True


def _profile_on_signals(path: str, interval: float) -> None:
    from pyinstrument import Profiler

    profiler = Profiler(interval=interval, async_mode="disabled")
    if os.environ.get("BENCH_PROFILE_CPU") == "1":
        # sample the loop thread's CPU time instead of the wall clock, so that time the process spent preempted by
        # other work on a shared machine is not charged to whatever frame was running (pyinstrument's own hook)
        import time

        from pyinstrument.stack_sampler import get_stack_sampler

        get_stack_sampler().timer_func = time.thread_time
    loop = asyncio.get_running_loop()

    def stop() -> None:
        profiler.stop()
        show_all = os.environ.get("BENCH_PROFILE_ALL") == "1"  # every frame, libraries included
        Path(path).write_text(profiler.output_text(unicode=False, color=False, show_all=show_all))
        print("PROFILED", flush=True)

    loop.add_signal_handler(signal.SIGUSR1, profiler.start)
    loop.add_signal_handler(signal.SIGUSR2, stop)


async def _main(specs: list[SiteSpec], sockets: list[socket.socket]) -> None:
    from bench import patches

    later = patches.apply(specs[0].patches)
    if specs[0].profile:
        _profile_on_signals(specs[0].profile, specs[0].profile_interval)

    def ready(_servers: Any) -> None:
        if specs[0].kind.startswith("mandate"):
            from server.cli.serve import freeze_startup_heap

            freeze_startup_heap()  # as ``mandate serve`` does once the app is built
        patches.after_start(later)
        print("READY", flush=True)

    await serve_group(specs, sockets, on_ready=ready)


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    specs = [SiteSpec.from_dict(data) for data in json.loads(argv[1])]
    sockets = [socket.socket(fileno=int(fd)) for fd in argv[2:]]
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it stopped on
        uvloop.run(_main(specs, sockets))


if __name__ == "__main__":
    main(sys.argv)
