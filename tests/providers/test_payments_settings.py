"""``[payments]`` settings: from the config file or the environment, validated, and the key kept out of every output."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import stripe

from scopes.money import Money
from server.config import ConfigError, load_settings
from server.providers.localstripe import LocalStripe
from server.providers.payments import ProviderError, ProviderInDoubt, ProviderRefused, open_provider
from server.providers.stripe import StripeProvider

KEY = "rk_test_51SecretKeyValue0123456789abcdef"


def test_the_config_file_configures_stripe(tmp_path: Path) -> None:
    config = tmp_path / "mandate.toml"
    config.write_text(
        f'[payments]\nprovider = "stripe"\napi_key = "{KEY}"\napi_base = "http://127.0.0.1:8420"\ntimeout_seconds = 3\n'
    )
    settings = load_settings(environ={"MANDATE_CONFIG": str(config)})
    assert settings.payments.provider == "stripe" and settings.payments.enabled
    assert settings.payments.api_key is not None and settings.payments.api_key.get_secret_value() == KEY
    assert (settings.payments.api_base, settings.payments.timeout_seconds) == ("http://127.0.0.1:8420", 3.0)


def test_the_environment_key_alone_configures_stripe_and_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "mandate.toml"
    config.write_text('[payments]\nprovider = "stripe"\napi_key = "rk_test_fromthefile000000"\n')
    env = {"MANDATE_CONFIG": str(config), "MANDATE_STRIPE_API_KEY": KEY}
    settings = load_settings(environ=env)
    assert settings.payments.api_key is not None and settings.payments.api_key.get_secret_value() == KEY
    only_env = load_settings(environ={"MANDATE_STRIPE_API_KEY": KEY, "MANDATE_STRIPE_API_BASE": "http://localhost:9"})
    assert (only_env.payments.provider, only_env.payments.api_base) == ("stripe", "http://localhost:9")


def test_without_payments_settings_there_is_no_provider() -> None:
    settings = load_settings(environ={})
    assert not settings.payments.enabled and open_provider(settings) is None
    assert "payments: none" in settings.describe()


@pytest.mark.parametrize(
    ("payments", "complaint"),
    [
        ('provider = "stripe"', "needs an API key"),
        (f'provider = "stripe"\napi_key = "{KEY}"\napi_base = "http://api.example.com"', "only accepted on loopback"),
        (f'provider = "stripe"\napi_key = "{KEY}"\napi_base = "ftp://127.0.0.1"', "http:// or https://"),
        (f'provider = "paypal"\napi_key = "{KEY}"', "payments.provider"),
        (f'provider = "stripe"\napi_key = "{KEY}"\ntimeout_seconds = 0', "payments.timeout_seconds"),
    ],
)
def test_a_bad_payments_section_is_a_clear_error_that_never_echoes_the_key(
    tmp_path: Path, payments: str, complaint: str
) -> None:
    config = tmp_path / "mandate.toml"
    config.write_text(f"[payments]\n{payments}\n")
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"MANDATE_CONFIG": str(config)})
    assert complaint in str(error.value)
    assert KEY not in str(error.value)


def test_the_key_is_hidden_from_repr_and_the_settings_summary() -> None:
    settings = load_settings(environ={"MANDATE_STRIPE_API_KEY": KEY})
    for text in (
        repr(settings),
        str(settings),
        settings.describe(),
        repr(settings.payments),
        str(settings.model_dump()),
    ):
        assert KEY not in text
    assert "key set, hidden" in settings.describe()
    provider = open_provider(settings)
    assert isinstance(provider, StripeProvider) and KEY not in repr(provider)


@pytest.mark.anyio
async def test_the_key_never_reaches_a_log_line_or_an_error_even_at_debug_level(
    localstripe: LocalStripe,
    test_payment: Callable[[Money], Awaitable[str]],
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(stripe, "log", "debug")  # the SDK's own console logging, at its most talkative
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="stripe")  # even if a CLI test in this process quietened it
    errors: list[ProviderError] = []
    provider = open_provider(localstripe.payments_settings(timeout_seconds=2))
    wrong = StripeProvider(api_key="sk_test_" + "w" * 30, api_base=localstripe.api_base)
    assert provider is not None
    try:
        payment = await test_payment(Money.from_minor(5000, "EUR"))
        await provider.refund(
            payment_ref=payment, amount=Money.from_minor(100, "EUR"), idempotency_key="k", metadata={"a": "b"}
        )
        for call in (
            provider.refund(
                payment_ref="pi_unknown0000000", amount=Money.from_minor(1, "EUR"), idempotency_key="k", metadata={}
            ),
            wrong.find_refund(payment_ref=payment, intent_id="x"),
        ):
            with pytest.raises(ProviderRefused) as refused:
                await call
            errors.append(refused.value)
        localstripe.kill()
        with pytest.raises(ProviderInDoubt) as doubt:
            await provider.find_refund(payment_ref=payment, intent_id="x")
        errors.append(doubt.value)
    finally:
        await provider.aclose()
        await wrong.aclose()
    printed = capsys.readouterr()
    assert "Request to Stripe api" in caplog.text + printed.err  # the SDK did log: the check below looks at real lines
    outputs = [caplog.text, printed.out, printed.err, localstripe.log_file.read_text()]
    for error in errors:
        outputs += [str(error), repr(error), "".join(traceback.format_exception(error))]
    for output in outputs:
        assert localstripe.api_key not in output
        assert "w" * 30 not in output
