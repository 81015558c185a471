"""``mandate init DIR``: a working directory for an installed Mandate, with the files a security team edits.

After ``pip install``, the default scope catalog, development agents and policy live inside site-packages, where
nobody should edit them. ``init`` copies them into ``DIR`` beside a commented ``mandate.toml`` that points at them,
so ``MANDATE_CONFIG=DIR/mandate.toml mandate dev`` serves from files the user owns. Existing files are never
overwritten unless ``--force`` is given; nothing is written when any of them exists.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from server.cli.common import CommandError
from server.config import Settings

_CONFIG_TEMPLATE = """\
# Mandate configuration (every setting: docs/configuration.md). Written by `mandate init`.
# Use it with:  MANDATE_CONFIG={config} mandate dev
# MANDATE_* environment variables override what is written here, and command-line flags override both.

# The SQLite database, the dev issuer's key, audit checkpoints. Several replicas share one PostgreSQL instead:
data_dir = {data}
# database_url = "postgresql://mandate@db.internal/mandate"

# Every OAuth scope, with its description (a new tool's new scope goes here too):
catalog_path = {catalog}
# Development agents for `mandate token mint --agent NAME`:
agents_path = {agents}
# Caps, budgets, approvals (docs/policy.md); the running server reloads it when it changes:
policy_path = {policy}

# host = "127.0.0.1"
# port = 8000
# resource_url = "https://mandate.example.com/mcp"   # the audience tokens must carry (RFC 8707)

# Development only: trust the local issuer that `mandate token mint` signs with. Production trusts its own
# authorization server instead (docs/authorization-servers.md):
# [[issuers]]
# issuer = "https://auth.example.com/"
# accepted_types = ["at+jwt"]
# scope_claims = ["scope"]
# tenant_claim = "tenant"   # tokens without it are refused; "" for a single-tenant deployment
"""


def _toml_string(path: Path) -> str:
    return json.dumps(str(path))  # a JSON string with its escapes is a TOML basic string


def _sources() -> dict[str, Path]:
    from scopes.catalog import DEFAULT_AGENTS, DEFAULT_CATALOG
    from scopes.policy import DEFAULT_POLICY

    sources = {"catalog.toml": DEFAULT_CATALOG, "agents.toml": DEFAULT_AGENTS, "policy.toml": DEFAULT_POLICY}
    suite = DEFAULT_POLICY.parent / "policy-tests" / "default.toml"
    if suite.is_file():
        sources["policy-tests/default.toml"] = suite
    return sources


def cmd_init(args: argparse.Namespace, _settings: Settings) -> int:
    target = Path(args.directory).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise CommandError(f"{target} exists and is not a directory")
    sources = _sources()
    config = target / "mandate.toml"
    written = [target / name for name in sources] + [config]
    existing = [path for path in written if path.exists()]
    if existing and not args.force:
        names = ", ".join(str(path.relative_to(target)) for path in existing)
        raise CommandError(f"{target} already has {names}; nothing written (--force overwrites)")
    try:
        for name, source in sources.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)
        (target / "data").mkdir(exist_ok=True)
        config.write_text(
            _CONFIG_TEMPLATE.format(
                config=config,
                data=_toml_string(target / "data"),
                catalog=_toml_string(target / "catalog.toml"),
                agents=_toml_string(target / "agents.toml"),
                policy=_toml_string(target / "policy.toml"),
            )
        )
    except OSError as exc:
        raise CommandError(f"cannot write into {target}: {exc.strerror or exc}") from None
    print(
        "\n".join(
            [
                f"wrote {config} and, to edit: catalog.toml (scopes), agents.toml (dev agents), policy.toml",
                f"  (its tests: policy-tests/default.toml) in {target}",
                "next:",
                f"  export MANDATE_CONFIG={config}",
                "  mandate dev                      # seed a demo store and serve it with the development issuer",
                "  mandate policy test " + str(target / "policy-tests" / "default.toml"),
            ]
        ),
        file=sys.stdout,
    )
    return 0


def register(sub: Any) -> None:
    init = sub.add_parser("init", help="write a configuration, the scope catalog and a policy to edit into a directory")
    init.add_argument("directory", help="where to write (created if missing)")
    init.add_argument("--force", action="store_true", help="overwrite files that already exist")
    init.set_defaults(handler=cmd_init)
