"""``mandate dev --localstripe``: the development server with refunds going through a local fake Stripe.

It starts localstripe (:mod:`server.providers.localstripe`) on 127.0.0.1 with its state under
``DATA_DIR/localstripe/`` (kept between runs, so the payments the demo orders are linked to stay there), points
``[payments]`` at it, seeds and links the demo orders, serves, and stops localstripe when the server stops. The
instance's test key is made once and kept in ``DATA_DIR/localstripe/api-key`` (mode 0600); it is never printed.
localstripe is a development dependency (``uv sync`` installs it; a production install has no need of it).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from server.cli.common import CommandError
from server.config import Settings
from server.providers.localstripe import LocalStripe, LocalStripeError, new_test_key

KEY_FILE = "api-key"


def dev_key(state_dir: Path) -> str:
    """This data directory's localstripe key: read from ``api-key``, or made and written there (0600)."""
    path = state_dir / KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key.startswith(("sk_test_", "rk_test_")):
            return key
    state_dir.mkdir(parents=True, exist_ok=True)
    key = new_test_key()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key


def run_with_localstripe(
    args: argparse.Namespace, settings: Settings, serve: Callable[[Settings, list[str]], int]
) -> int:
    if importlib.util.find_spec("localstripe") is None:
        raise CommandError(
            "localstripe is not installed: it is a development dependency (run `make setup` or `uv sync`)"
        )
    if settings.payments.enabled:
        raise CommandError("--localstripe replaces the configured payments provider: unset [payments] to use it")
    state_dir = settings.data_dir / "localstripe"
    instance = LocalStripe(state_dir, api_key=dev_key(state_dir), port=args.localstripe_port)
    try:
        instance.start()
    except LocalStripeError as exc:
        raise CommandError(f"{exc} (is port {args.localstripe_port} taken? try --localstripe-port 0)") from None
    try:
        from server.cli.serve import _uv_run

        key_file = state_dir / KEY_FILE
        lines = [
            f"  payments: localstripe at {instance.api_base} (fake Stripe; state in {state_dir})",
            "Compare the refunds Mandate recorded with what the provider holds:",
            f"  MANDATE_STRIPE_API_BASE={instance.api_base} MANDATE_STRIPE_API_KEY=$(cat {key_file}) "
            f"{_uv_run()} mandate reconcile payments",
        ]
        return serve(settings.model_copy(update={"payments": instance.payments_settings()}), lines)
    finally:
        instance.stop()
