"""Starting the benchmarked servers: one process per group of sites (pinned to one CPU), or all in this process.

The processes are started together and run together for the whole benchmark, so the measurement can alternate
between them (A B A B ...). On a machine with two CPUs or more the servers are pinned to CPU 0 and the load
generator (this process) to CPU 1: the server measured has one CPU to itself, the client never competes with it,
and the other servers are idle meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.serve import SiteSpec, serve_group

SERVER_CPU = 0
CLIENT_CPU = 1
START_TIMEOUT = 300.0  # generous: a loaded machine starts ten processes slowly
ROOT = Path(__file__).resolve().parent.parent


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.set_inheritable(True)
    return sock


def can_pin() -> bool:
    return hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2


def cpu_seconds(site: Site) -> float | None:
    """User + system CPU time the site's server process has used (every thread), or None when served in process."""
    process = site.group.process
    if process is None:
        return None
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14 and 15)


def pin_process(pid: int, cpu: int) -> None:
    """Pin every thread of a process (affinity is per thread on Linux; threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(task.name), {cpu})


@contextlib.contextmanager
def client_pinned(enabled: bool) -> Iterator[None]:
    """Run this process (the load generator) on CLIENT_CPU for the duration."""
    if not enabled:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {CLIENT_CPU})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


@dataclass
class Group:
    """The sites one process (or one in-process task) serves."""

    name: str
    specs: list[tuple[str, SiteSpec]]
    sockets: list[socket.socket]
    process: subprocess.Popen[str] | None = None
    servers: list[Any] = field(default_factory=list[Any])
    task: asyncio.Future[Any] | None = None


@dataclass
class Site:
    """A running server: where to reach it and the bearer token to send (None for the bare server)."""

    name: str
    spec: SiteSpec
    token: str | None
    group: Group

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    async def profile(self, signum: int) -> None:
        """SIGUSR1: start the server process's profiler; SIGUSR2: stop it and wait until the profile is written."""
        process = self.group.process
        if process is None or process.stdout is None:
            raise RuntimeError("profiling needs a server process")
        process.send_signal(signum)
        if signum == signal.SIGUSR2:
            line = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
            if line.strip() != "PROFILED":
                raise RuntimeError(f"{self.name}: no profile written ({line!r})")


def token_for(spec: SiteSpec) -> str | None:
    """A development-issuer token for the site (creating the issuer's key on first use), or None for the bare one."""
    if spec.kind in ("bare", "bare_refund", "bare_refund_direct", "bare_external"):
        return None
    from bench.mandate_site import bench_settings, mint_refund_token, mint_token, refund_settings

    if spec.kind in ("mandate_refund", "mandate_external"):
        return mint_refund_token(refund_settings(Path(spec.data_dir)))
    return mint_token(bench_settings(Path(spec.data_dir), tools=spec.tools))


async def _start_process(group: Group, pin: bool) -> None:
    specs = json.dumps([spec.to_dict() for _, spec in group.specs])
    source = group.specs[0][1].source
    fds = [sock.fileno() for sock in group.sockets]
    group.process = subprocess.Popen(  # noqa: S603, ASYNC220 - our own interpreter and module; returns at once
        [sys.executable, "-m", "bench.serve", specs, *map(str, fds)],
        pass_fds=fds,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1", **({"PYTHONPATH": source} if source else {})),
        cwd=source or ROOT,
    )
    assert group.process.stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(group.process.stdout.readline), START_TIMEOUT)
    except TimeoutError:
        raise RuntimeError(f"{group.name}: the servers did not start within {START_TIMEOUT:.0f} s") from None
    if line.strip() != "READY":
        raise RuntimeError(f"{group.name}: the server process failed to start (exit {group.process.poll()})")
    if pin:  # pinned once started: ten processes importing at once on one CPU would start one after the other
        pin_process(group.process.pid, SERVER_CPU)


async def _start_in_process(group: Group) -> None:
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    group.task = task = asyncio.ensure_future(
        serve_group([spec for _, spec in group.specs], group.sockets, on_ready=ready.set_result)
    )
    await asyncio.wait({task, ready}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        raise RuntimeError(f"{group.name}: the in-process servers did not start")
    group.servers = ready.result()


async def _stop(group: Group) -> None:
    process = group.process
    if process is not None:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(asyncio.to_thread(process.wait), 15)
            except TimeoutError:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
    if group.task is not None:
        for server in group.servers:
            server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(group.task, 15)
    for sock in group.sockets:
        sock.close()


@contextlib.asynccontextmanager
async def running(
    specs: Sequence[tuple[str, SiteSpec]], *, in_process: bool = False, pin: bool = False
) -> AsyncIterator[dict[str, Site]]:
    """Start every named site (a process per group, concurrently), yield them by name, stop them all afterwards."""
    groups: dict[str, Group] = {}
    sites: dict[str, Site] = {}
    for name, spec in specs:
        sock = bound_socket()
        spec = replace(spec, port=sock.getsockname()[1], group=spec.group or name)
        group = groups.setdefault(spec.group, Group(spec.group, [], []))
        group.specs.append((name, spec))
        group.sockets.append(sock)
        Path(spec.data_dir).mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - before anything runs
        sites[name] = Site(name, spec, token_for(spec), group)  # the key exists before the server reads it
    try:
        if in_process:
            for group in groups.values():
                await _start_in_process(group)
        else:
            outcomes = await asyncio.gather(
                *(_start_process(group, pin) for group in groups.values()), return_exceptions=True
            )
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        yield sites
    finally:
        await asyncio.gather(*(_stop(group) for group in groups.values()), return_exceptions=True)
