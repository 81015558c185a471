"""Fixtures of the effects tests: the TEST DOUBLE payments provider (tests/effects/doubles.py) in the harness's
server, with every demo order linked to a payment."""

from __future__ import annotations

import pytest

from tests.conftest import Harness
from tests.effects import support
from tests.effects.doubles import DoublePayments


@pytest.fixture
async def double(harness: Harness) -> DoublePayments:
    provider = DoublePayments()
    harness.mandate.enforcer.providers["payments"] = provider
    await support.link_orders(harness.mandate.db)
    return provider
