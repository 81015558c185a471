"""Helpers for the interop tests: start/stop Mandate and the npm peers, run clients, raw HTTP.

Every process started here is stopped in a ``finally`` (SIGTERM, then SIGKILL after a bounded wait) and every
wait is bounded by a deadline: no unbounded sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

INTEROP_DIR = Path(__file__).resolve().parent
REPO_ROOT = INTEROP_DIR.parents[1]
NODE_MODULES = INTEROP_DIR / "node_modules"
INSPECTOR = NODE_MODULES / ".bin" / "mcp-inspector"
OAUTH_SERVER_SCRIPT = INTEROP_DIR / "oauth_server.cjs"
TS_CLIENT_SCRIPT = INTEROP_DIR / "ts_client.mjs"

STARTUP_TIMEOUT = 30.0  # seconds for a server to become ready
CLIENT_TIMEOUT = 60.0  # seconds for one client run (the inspector starts a Node runtime each time)
STOP_TIMEOUT = 5.0  # seconds between SIGTERM and SIGKILL

# The tools of the contract and the scopes that let a token see and call each one (any one of them suffices).
TOOL_SCOPES: dict[str, tuple[str, ...]] = {
    "customer_lookup": ("customers:read",),
    "orders_list": ("orders:read",),
    "order_get": ("orders:read",),
    "order_cancel": ("orders:cancel",),
    "refund_create": ("refunds:create", "refunds:create:large"),
    "account_email_change": ("accounts:write",),
}


def mandate_executable() -> Path:
    """The project's ``mandate`` entry point, as an absolute path (the stdio test needs one)."""
    beside_python = Path(sys.executable).parent / "mandate"
    if beside_python.exists():
        return beside_python
    venv = REPO_ROOT / ".venv" / "bin" / "mandate"
    if venv.exists():
        return venv
    found = shutil.which("mandate")
    if found is None:
        pytest.fail("the `mandate` console script is not installed: run `uv sync` first")
    return Path(found).resolve()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Service:
    """A long-running child process whose output goes to a log file."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after a bounded wait; never raises for an already finished process."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def read_line_before(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """One line of ``proc``'s stdout, or an AssertionError once ``deadline`` (time.monotonic) passes."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    buffer = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line on stdout in time (got {buffer!r})")
            if not selector.select(timeout=remaining):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                raise AssertionError(
                    f"process exited (code {proc.wait(timeout=STOP_TIMEOUT)}) before a line: {buffer!r}"
                )
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


@dataclass
class RunResult:
    args: Sequence[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return f"$ {' '.join(self.args)}\nexit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def json(self) -> Any:
        try:
            return json.loads(self.stdout)
        except json.JSONDecodeError as exc:
            raise AssertionError(f"stdout is not JSON ({exc}):\n{self.describe()}") from exc


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = CLIENT_TIMEOUT,
    cwd: Path | None = None,
) -> RunResult:
    """Run a command to completion within ``timeout`` seconds, capturing its output.

    The command runs in a process group of its own; on timeout the whole group (e.g. the Inspector and the stdio
    server it started) is killed and the test fails with what the command had printed.
    """
    str_args = [os.fspath(a) for a in args]
    proc = subprocess.Popen(
        str_args,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=STOP_TIMEOUT)
        partial = RunResult(str_args, -9, stdout.decode(errors="replace"), stderr.decode(errors="replace"))
        raise AssertionError(f"timed out after {timeout} s:\n{partial.describe()}") from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
    return RunResult(str_args, proc.returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"))


# --------------------------------------------------------------------------------------------------------------
# HTTP helpers (stdlib only)
# --------------------------------------------------------------------------------------------------------------


@dataclass
class HttpResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


def http_request(
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return HttpResponse(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as exc:
        return HttpResponse(exc.code, dict(exc.headers.items()), exc.read())


PROTOCOL_VERSION = "2025-06-18"


def _mcp_headers(token: str | None, session_id: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if session_id is not None:
        headers["Mcp-Session-Id"] = session_id
        headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
    return headers


def mcp_initialize(url: str, token: str | None) -> HttpResponse:
    """A raw MCP ``initialize`` POST, to see the HTTP status and headers the server answers with."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "mandate-interop-raw", "version": "0"},
        },
    }
    return http_request("POST", url, headers=_mcp_headers(token), body=json.dumps(body).encode())


def mcp_call_tool(url: str, token: str, name: str, arguments: Mapping[str, Any]) -> HttpResponse:
    """Raw ``initialize``, ``notifications/initialized`` and ``tools/call`` POSTs; the ``tools/call`` response."""
    initialized = mcp_initialize(url, token)
    assert initialized.status == 200, f"initialize: HTTP {initialized.status} {initialized.body!r}"
    session_id = initialized.header("Mcp-Session-Id")
    headers = _mcp_headers(token, session_id)
    if session_id is None:
        headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
    notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    http_request("POST", url, headers=headers, body=json.dumps(notification).encode())
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": name, "arguments": dict(arguments)}}
    return http_request("POST", url, headers=headers, body=json.dumps(call).encode())


def wait_for_http_200(url: str, service: Service, deadline: float) -> None:
    last = "no answer"
    while time.monotonic() < deadline:
        if service.proc.poll() is not None:
            raise AssertionError(f"{service.name} exited with {service.proc.returncode}:\n{service.log()}")
        try:
            response = http_request("GET", url, timeout=2.0)
        except OSError as exc:
            last = repr(exc)
        else:
            if response.status == 200:
                return
            last = f"HTTP {response.status}"
        time.sleep(0.1)
    raise AssertionError(f"{service.name} not ready at {url} in time ({last}):\n{service.log()}")


# --------------------------------------------------------------------------------------------------------------
# oauth2-mock-server
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MockIssuer:
    """oauth2-mock-server, started by ``oauth_server.cjs``."""

    url: str
    service: Service

    @property
    def jwks_uri(self) -> str:
        return f"{self.url}/jwks"

    def mint(
        self,
        *,
        scope: str,
        aud: str,
        client_id: str = "interop-agent",
        sub: str | None = None,
        expired: bool = False,
        typ: str | None = None,
        scope_as: str | None = None,
    ) -> str:
        form = {"grant_type": "client_credentials", "client_id": client_id, "scope": scope, "aud": aud}
        if scope_as is not None:
            form["scope_as"] = scope_as
        if sub is not None:
            form["sub"] = sub
        if expired:
            form["expired"] = "1"
        if typ is not None:
            form["typ"] = typ
        response = http_request(
            "POST",
            f"{self.url}/token",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=urllib.parse.urlencode(form).encode(),
        )
        assert response.status == 200, f"mock issuer refused to mint: {response.status} {response.body!r}"
        token = json.loads(response.body)["access_token"]
        assert isinstance(token, str)
        return token


@contextlib.contextmanager
def start_mock_issuer(work_dir: Path) -> Iterator[MockIssuer]:
    log_path = work_dir / "oauth2-mock-server.log"
    env = {**os.environ, "OAUTH_SERVER_EXIT_ON_STDIN_EOF": "1"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["node", os.fspath(OAUTH_SERVER_SCRIPT), "0", os.fspath(work_dir / "issuer-key.json")],
            cwd=INTEROP_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    service = Service("oauth2-mock-server", proc, log_path)
    try:
        line = read_line_before(proc, time.monotonic() + STARTUP_TIMEOUT)
        assert line.startswith("READY "), f"unexpected first line {line!r}:\n{service.log()}"
        port = int(line.split()[1])
        issuer = MockIssuer(url=f"http://127.0.0.1:{port}", service=service)
        wait_for_http_200(f"{issuer.url}/.well-known/openid-configuration", service, time.monotonic() + STARTUP_TIMEOUT)
        yield issuer
    finally:
        service.stop()


@dataclass
class MandateInstance:
    """A data dir + config for ``mandate``; ``serve()`` runs the HTTP server on it."""

    data_dir: Path
    config_path: Path
    port: int
    home: Path
    service: Service | None = field(default=None)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base_url}/mcp"

    @property
    def metadata_url(self) -> str:
        return f"{self.base_url}/.well-known/oauth-protected-resource/mcp"

    @property
    def env(self) -> dict[str, str]:
        # Settings the developer's own shell may carry (MANDATE_*) would override the TOML: leave them out.
        inherited = {key: value for key, value in os.environ.items() if not key.startswith("MANDATE_")}
        return {
            **inherited,
            "MANDATE_DATA_DIR": os.fspath(self.data_dir),
            "MANDATE_CONFIG": os.fspath(self.config_path),
            "HOME": os.fspath(self.home),
        }

    def write_config(
        self,
        *,
        dev_issuer: bool,
        issuers: Sequence[MockIssuer] = (),
        accepted_types: Sequence[str] = ("at+jwt", "jwt"),
        settings: Sequence[str] = (),
        issuer_settings: Sequence[str] = (),
    ) -> None:
        """``settings``: more top-level TOML lines; ``issuer_settings``: more lines in each issuer's table."""
        lines = [
            *settings,
            # The dev issuer's `iss` is derived from resource_url's origin, so `token mint` and
            # `serve --transport stdio` agree with the HTTP server on this port without further settings.
            f'resource_url = "{self.mcp_url}"',
            f"dev_issuer = {'true' if dev_issuer else 'false'}",
            "",
        ]
        for issuer in issuers:
            lines += [
                "[[issuers]]",
                f'issuer = "{issuer.url}"',
                f'jwks_uri = "{issuer.jwks_uri}"',
                # oauth2-mock-server writes `typ: JWT`, not RFC 9068's `at+jwt`: accepted for it by default.
                f"accepted_types = {json.dumps(list(accepted_types))}",
                # a single-tenant deployment: the mock issuer's tokens name no tenant (required by default otherwise)
                'tenant_claim = ""',
                *issuer_settings,
                "",
            ]
        self.config_path.write_text("\n".join(lines))

    def cli(self, *args: str, timeout: float = CLIENT_TIMEOUT) -> RunResult:
        return run([mandate_executable(), *args], env=self.env, timeout=timeout, cwd=REPO_ROOT)

    def mint_agent(self, agent: str) -> str:
        result = self.cli("token", "mint", "--agent", agent)
        assert result.returncode == 0, result.describe()
        token = result.stdout.strip()
        assert token.count(".") == 2, f"not a JWT:\n{result.describe()}"
        return token

    @contextlib.contextmanager
    def serve(self) -> Iterator[MandateInstance]:
        log_path = self.data_dir.parent / f"mandate-serve-{self.port}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [
                    os.fspath(mandate_executable()),
                    "serve",
                    "--transport",
                    "http",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.service = Service(f"mandate serve :{self.port}", proc, log_path)
        try:
            wait_for_http_200(self.metadata_url, self.service, time.monotonic() + STARTUP_TIMEOUT)
            yield self
        finally:
            self.service.stop()
            self.service = None


def new_mandate(
    work_dir: Path,
    *,
    dev_issuer: bool,
    issuers: Sequence[MockIssuer] = (),
    accepted_types: Sequence[str] = ("at+jwt", "jwt"),
    settings: Sequence[str] = (),
    issuer_settings: Sequence[str] = (),
) -> MandateInstance:
    """A seeded data dir and a config for a Mandate on a free port (not started)."""
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True)
    home = work_dir / "home"
    home.mkdir()
    instance = MandateInstance(data_dir=data_dir, config_path=work_dir / "config.toml", port=free_port(), home=home)
    instance.write_config(
        dev_issuer=dev_issuer,
        issuers=issuers,
        accepted_types=accepted_types,
        settings=settings,
        issuer_settings=issuer_settings,
    )
    seeded = instance.cli("seed")
    assert seeded.returncode == 0, seeded.describe()
    return instance


@dataclass
class Inspector:
    """The MCP Inspector CLI, with its own HOME (it keeps state under ~/.mcp-inspector)."""

    home: Path

    def env(self) -> dict[str, str]:
        return {**os.environ, "HOME": os.fspath(self.home)}

    def http(self, url: str, token: str | None, *args: str) -> RunResult:
        header = ["--header", f"Authorization: Bearer {token}"] if token is not None else []
        return run(
            [INSPECTOR, "--cli", url, *header, *args, "--format", "json", "-q", "--stored-auth-only"],
            env=self.env(),
            cwd=INTEROP_DIR,
        )

    def stdio(self, server_env: Mapping[str, str], server_command: Sequence[str], *args: str) -> RunResult:
        env_args: list[str] = []
        for key, value in server_env.items():
            env_args += ["-e", f"{key}={value}"]
        return run(
            [INSPECTOR, "--cli", *env_args, *args, "--format", "json", "-q", "--", *server_command],
            env=self.env(),
            cwd=INTEROP_DIR,
        )


def inspector_tool_names(result: RunResult) -> list[str]:
    """The tool names from ``mcp-inspector --cli --method tools/list --format json`` output."""
    assert result.returncode == 0, result.describe()
    payload = result.json()
    tools = payload["result"]["tools"]
    return [tool["name"] for tool in tools]


def inspector_call_result(result: RunResult) -> dict[str, Any]:
    """The ``CallToolResult`` from ``mcp-inspector --cli --method tools/call --format json`` output."""
    assert result.returncode == 0, result.describe()
    call_result = result.json()["result"]
    assert isinstance(call_result, dict)
    assert call_result.get("isError") is not True, result.describe()
    return call_result


def contract_tools(names: Sequence[str]) -> set[str]:
    """The names among ``names`` that the contract knows (the server may have tools beyond the contract)."""
    return {name for name in names if name in TOOL_SCOPES}


def tools_for(scopes: Sequence[str]) -> set[str]:
    """The contract tools that a token holding ``scopes`` must see, and no others."""
    return {name for name, needs in TOOL_SCOPES.items() if set(needs) & set(scopes)}


def ts_client(url: str, token: str, *args: str) -> RunResult:
    """``node ts_client.mjs URL TOKEN ...`` (the TypeScript SDK client)."""
    return run(["node", TS_CLIENT_SCRIPT, url, token, *args], cwd=INTEROP_DIR)
