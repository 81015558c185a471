"""Run ``localstripe`` (a stateful fake Stripe server, a real HTTP server) for development and tests.

localstripe 1.15 keeps its state in a fixed file, ``/tmp/localstripe.pickle`` (it does not read ``TMPDIR``), binds
every interface, and accepts any ``sk_`` key. Two instances on one machine would share and overwrite one state
file. So it is never started with its own ``localstripe`` command here: ``python -m server.providers.localstripe``
imports it and, before serving,

- points its store at a state file of this instance's own (``--state``), written atomically (a ``kill -9`` mid-write
  leaves the previous state, not a torn pickle); no ``--state``: nothing is written, state lives in memory;
- binds ``127.0.0.1`` only, on ``--port`` (``0``: a free port, written to ``--port-file`` once bound);
- accepts only the API key in ``LOCALSTRIPE_API_KEY`` (``sk_`` or ``rk_``), so a wrong key gets HTTP 401 as at
  Stripe, and the key never appears on a command line;
- exits when the process that started it (``--parent-pid``) is gone, so no orphan outlives a killed test run.

:class:`LocalStripe` manages one such process: start and await readiness (HTTP polling with a generous deadline),
stop, kill (``SIGKILL``: "the provider died mid-call"), pause and resume (``SIGSTOP``/``SIGCONT``: a provider that
accepts connections and never answers, so calls time out), restart on the same port with the same state. Its
methods are synchronous (process control); from async code, call :meth:`LocalStripe.start` and
:meth:`LocalStripe.restart` through ``anyio.to_thread.run_sync``. localstripe is a development dependency: the
server itself never imports it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import pickle
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # the server process imports only what serving needs, so it starts fast
    from server.config import PaymentsSettings

READY_TIMEOUT_SECONDS: Final = 60.0
"""How long a start may take before it is an error: generous, for a loaded 2-core machine."""
KEY_VARIABLE: Final = "LOCALSTRIPE_API_KEY"


class LocalStripeError(RuntimeError):
    """localstripe could not be started or stopped; the message says why and where its log is."""


def new_test_key() -> str:
    """A fresh test-mode secret key for one localstripe instance (``sk_test_`` and 32 random characters)."""
    return f"sk_test_{secrets.token_urlsafe(24)}"


class LocalStripe:
    """One localstripe process with its own state file, port and API key (see the module docstring).

    ``state_dir`` holds ``state.pickle`` (the provider's objects), ``port`` and ``localstripe.log``. A second
    :class:`LocalStripe` on the same ``state_dir`` (after this one stopped) sees the same refunds and payments.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        api_key: str | None = None,
        port: int = 0,
        ready_timeout: float = READY_TIMEOUT_SECONDS,
        persist: bool = True,
    ) -> None:
        self.state_dir = state_dir
        self.persist = persist
        """Keep the provider's objects in ``state.pickle`` (a restart sees them); off, they live in memory only."""
        self.api_key = api_key or new_test_key()
        self.port = port
        self.ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    def __repr__(self) -> str:
        return f"LocalStripe(api_base={self.api_base!r}, running={self.running})"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.pickle"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "localstripe.log"

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def payments_settings(self, *, timeout_seconds: float = 10.0) -> PaymentsSettings:
        """``[payments]`` settings that reach this instance."""
        from pydantic import SecretStr

        from server.config import PaymentsSettings

        return PaymentsSettings(
            provider="stripe",
            api_key=SecretStr(self.api_key),
            api_base=self.api_base,
            timeout_seconds=timeout_seconds,
        )

    def start(self) -> LocalStripe:
        """Start the process and return once it answers an authenticated API call."""
        if self.running:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port_file = self.state_dir / "port"
        port_file.unlink(missing_ok=True)
        command = [
            sys.executable,
            "-m",
            "server.providers.localstripe",
            "--port",
            str(self.port),
            *(("--state", str(self.state_file)) if self.persist else ()),
            "--port-file",
            str(port_file),
            "--parent-pid",
            str(os.getpid()),
        ]
        env = {**os.environ, KEY_VARIABLE: self.api_key}
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own module, run by this interpreter
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self._paused = False
        try:
            self._await_ready(port_file)
        except BaseException:
            self.kill()
            raise
        return self

    def _await_ready(self, port_file: Path) -> None:
        import httpx2

        deadline = time.monotonic() + self.ready_timeout
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx2.Client(timeout=5.0, trust_env=False) as client:
            while True:
                process = self._process
                assert process is not None
                if process.poll() is not None:
                    raise LocalStripeError(
                        f"localstripe exited with status {process.returncode} while starting; see {self.log_file}"
                    )
                if time.monotonic() > deadline:
                    raise LocalStripeError(
                        f"localstripe did not answer within {self.ready_timeout:g} s; see {self.log_file}"
                    )
                if port_file.exists():
                    text = port_file.read_text().strip()
                    if text.isdigit():
                        self.port = int(text)
                        with contextlib.suppress(httpx2.HTTPError):
                            answer = client.get(f"{self.api_base}/v1/customers", params={"limit": 1}, headers=headers)
                            if answer.status_code == 200:
                                return
                time.sleep(0.05)  # polling a starting process; the deadline above bounds the wait

    def stop(self) -> None:
        """Stop gracefully (``SIGTERM``, then ``SIGKILL`` after a generous grace period). State is kept on disk."""
        process = self._process
        if process is None or process.poll() is not None:
            self._process = None
            return
        if self._paused:
            self.resume()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        self._process = None

    def kill(self) -> None:
        """Kill abruptly (``SIGKILL``): in-flight calls see a reset connection, as when a provider dies mid-call."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
        self._process = None
        self._paused = False

    def pause(self) -> None:
        """Freeze the process (``SIGSTOP``): connections are accepted by the kernel but never answered."""
        if self._process is None or not self.running:
            raise LocalStripeError("localstripe is not running")
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused process go on (``SIGCONT``); it answers what it received meanwhile."""
        if self._process is not None and self._paused:
            self._process.send_signal(signal.SIGCONT)
        self._paused = False

    def restart(self) -> LocalStripe:
        """Stop and start again on the same port with the same state."""
        self.stop()
        return self.start()

    def __enter__(self) -> LocalStripe:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.kill() if self._paused else self.stop()


# --- the process itself: ``python -m server.providers.localstripe`` ---------------------------------------------


def _accepts(expected: str) -> Any:
    """localstripe's ``get_api_key`` replaced: only ``expected`` authenticates (Bearer or Basic, as Stripe takes it)."""

    def get_api_key(request: Any) -> str | None:
        scheme, _, value = str(request.headers.get("Authorization", "")).partition(" ")
        if scheme == "Basic":
            try:
                value = base64.b64decode(value.encode()).decode().split(":")[0]
            except ValueError:
                return None
        elif scheme != "Bearer":
            return None
        return value if secrets.compare_digest(value.encode(), expected.encode()) else None

    return get_api_key


def _patch_store(resources: Any, state: Path | None) -> None:
    def load(store: dict[str, Any]) -> None:
        if state is not None and state.exists():
            with state.open("rb") as handle:
                old = pickle.load(handle)  # noqa: S301 - a file this process family wrote itself
            store.clear()
            store.update(old)

    def dump(store: dict[str, Any]) -> None:
        if state is None:
            return
        partial = state.with_name(state.name + ".partial")
        with partial.open("wb") as handle:
            pickle.dump(dict(store), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(partial, state)

    resources.Store.try_load_from_disk = load
    resources.Store.dump_to_disk = dump


async def _watch_parent(parent: int) -> None:
    import anyio

    while True:
        await anyio.sleep(1.0)
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        except PermissionError:  # pragma: no cover - a pid reused by another user: the parent is gone
            os.kill(os.getpid(), signal.SIGTERM)
            return


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.providers.localstripe", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, help="state file (default: none, state in memory only)")
    parser.add_argument("--port-file", type=Path, help="write the bound port here once listening")
    parser.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    expected = os.environ.pop(KEY_VARIABLE, "")
    if not expected.startswith(("sk_", "rk_")) or len(expected) < 12:
        print(f"{KEY_VARIABLE} must hold the sk_/rk_ key this instance accepts", file=sys.stderr)
        return 2

    import asyncio

    from aiohttp import web
    from localstripe import resources, server  # type: ignore[import-untyped]

    _patch_store(resources, args.state)
    server.get_api_key = _accepts(expected)
    resources.store.try_load_from_disk()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    if args.port_file is not None:
        partial = args.port_file.with_name(args.port_file.name + ".partial")
        partial.write_text(str(sock.getsockname()[1]))
        os.replace(partial, args.port_file)

    app = server.app
    if args.parent_pid:
        tasks: set[asyncio.Task[None]] = set()

        async def watch(_app: Any) -> None:
            tasks.add(asyncio.get_running_loop().create_task(_watch_parent(args.parent_pid)))

        app.on_startup.append(watch)
    web.run_app(app, sock=sock, access_log=None, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
