"""The signing keys of one trusted issuer: a JSON Web Key Set (RFC 7517 section 5) fetched once and cached.

The key set comes from an ``https://`` (or ``http://``) ``jwks_uri`` (RFC 8414 section 2) or, for the development issuer
of a stdio server, from a local file. Keys are parsed once into joserfc key objects and looked up by ``kid`` (RFC 7515
section 4.1.4). The cache is refreshed:

* after ``max_age_seconds`` (default 600 s), so retired keys eventually disappear;
* when a token names a ``kid`` we do not hold (the issuer rotated its keys), at most once per
  ``refetch_cooldown_seconds`` (default 60 s), so a flood of tokens with made-up ``kid`` values cannot turn into a
  flood of requests to the issuer. Concurrent requests share one in-flight fetch.

A failed refresh (network error, non-200 status, bad JSON, no usable key) keeps the cached keys in use: tokens keep
verifying through an issuer's JWKS outage. Only when no keys were ever loaded does a lookup fail, with
``InvalidToken("key set unavailable")``. Following RFC 7517 section 5, keys that cannot be used are skipped rather than
failing the whole set; symmetric (``oct``) keys and keys marked ``"use": "enc"`` are never used to verify, and only the
public half of any key is kept. Key material is never logged.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import anyio
import httpx2
import joserfc.jws  # noqa: F401 - registers the JWS algorithms that key selection consults
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet
from joserfc.jws import JWSRegistry

from server.auth._fetch import FetchError, get_json_object, parse_json_object
from server.auth.errors import InvalidToken

logger = logging.getLogger(__name__)

JWKS_MEDIA_TYPES: Final = "application/jwk-set+json, application/json"
MIN_RSA_KEY_BITS: Final = 2048
"""RFC 7518 section 3.3: RSA keys for RS* and PS* MUST be 2048 bits or larger."""


def is_http_url(source: str) -> bool:
    """Whether a JWKS source is an http(s) URL (otherwise it is a local file path)."""
    return urlsplit(source).scheme.lower() in ("http", "https")


def check_jwks_source(source: str) -> None:
    """Raise ValueError unless ``source`` is an http(s) URL with a host or a plausible local file path."""
    if is_http_url(source):
        if not urlsplit(source).hostname:
            raise ValueError("a JWKS URL needs a host")
    elif not source or "://" in source:
        raise ValueError("a JWKS source is an http(s) URL or a local file path")


class JwksCache:
    """The cached key set of one issuer, loaded on first use."""

    def __init__(
        self,
        source: str | Path,
        *,
        http_client: httpx2.AsyncClient | None = None,
        refetch_cooldown_seconds: float = 60.0,
        max_age_seconds: float = 600.0,
        unavailable_retry_seconds: float = 5.0,
        timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``source`` is an http(s) URL or a local file path. ``unavailable_retry_seconds`` spaces out attempts while
        no key set has ever loaded; ``clock`` is a monotonic clock in seconds (tests pass a fake one)."""
        self._url: str | None = None
        self._path: Path | None = None
        if isinstance(source, Path):
            self._path = source
        else:
            check_jwks_source(source)
            if is_http_url(source):
                self._url = source
            else:
                self._path = Path(source)
        for name, value in (
            ("refetch_cooldown_seconds", refetch_cooldown_seconds),
            ("max_age_seconds", max_age_seconds),
            ("unavailable_retry_seconds", unavailable_retry_seconds),
            ("timeout_seconds", timeout_seconds),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be positive")
        self._client = http_client
        self._owns_client = False
        self._cooldown = refetch_cooldown_seconds
        self._max_age = max_age_seconds
        self._unavailable_retry = unavailable_retry_seconds
        self._timeout = timeout_seconds
        self._clock = clock

        self._keys: KeySet | None = None
        self._next_load_at = -math.inf
        """When the next scheduled load is due: max age after a success, a retry delay after a failure."""
        self._last_kid_refetch_at = -math.inf
        self._attempts = 0
        """Counts finished load attempts: a task that saw one count and then waited for the lock knows, when the count
        has changed, that a fetch completed meanwhile (perhaps one already in flight when it looked) and reuses it."""
        self._lock = anyio.Lock()

    @property
    def source(self) -> str:
        """Where the keys come from, for logs: the path, or the URL without credentials, query or fragment."""
        if self._url is None:
            return str(self._path)
        parts = urlsplit(self._url)
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}{parts.path}"

    async def keys(self) -> KeySet:
        """The current key set, loading it first when none is cached or the cached one is older than the max age.
        While a scheduled refresh is in flight, other callers go on with the cached keys instead of waiting."""
        if self._clock() >= self._next_load_at and not (self._keys is not None and self._lock.locked()):
            attempts_seen = self._attempts
            async with self._lock:
                if self._attempts == attempts_seen:
                    await self._load()
        if self._keys is None:
            raise InvalidToken("key set unavailable")
        return self._keys

    async def get_key(self, kid: str | None, algorithm: str) -> Key:
        """The key with this ``kid`` that can verify ``algorithm`` (checked by joserfc: key type, curve, ``use`` and
        ``alg``). Without a ``kid``, the set must hold exactly one such key. An unknown ``kid`` triggers one refetch
        per cooldown, shared by every request that waits for it."""
        attempts_seen = self._attempts
        key = _select(await self.keys(), kid, algorithm)
        if key is not None:
            return key
        async with self._lock:
            now = self._clock()
            if self._attempts == attempts_seen and now >= self._last_kid_refetch_at + self._cooldown:
                self._last_kid_refetch_at = now
                logger.info("JWKS %s has no key for the token's kid; refetching", self.source)
                await self._load()
        if self._keys is not None:
            key = _select(self._keys, kid, algorithm)
            if key is not None:
                return key
        raise InvalidToken("no key matches the token")

    async def aclose(self) -> None:
        """Close the HTTP client if this cache created it."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
            self._owns_client = False

    async def __aenter__(self) -> JwksCache:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _load(self) -> None:
        """One fetch attempt (the caller holds the lock). Never raises for a fetch failure: the old keys stay."""
        try:
            key_set = _parse_key_set(await self._fetch())
        except FetchError as exc:
            self._next_load_at = self._clock() + (self._cooldown if self._keys is not None else self._unavailable_retry)
            if self._keys is not None:
                logger.warning("JWKS refresh from %s failed (%s); keeping the cached keys", self.source, exc.reason)
            else:
                logger.warning("JWKS fetch from %s failed (%s); no keys available", self.source, exc.reason)
        else:
            self._keys = key_set
            self._next_load_at = self._clock() + self._max_age
            logger.info("JWKS loaded from %s: %d key(s)", self.source, len(key_set.keys))
        self._attempts += 1  # not on cancellation: then a waiting task makes its own attempt

    async def _fetch(self) -> dict[str, Any]:
        if self._path is not None:
            try:
                with anyio.fail_after(self._timeout):
                    raw = await anyio.Path(self._path).read_bytes()
            except OSError as exc:  # includes TimeoutError
                raise FetchError(type(exc).__name__) from exc
            return parse_json_object(raw)
        assert self._url is not None
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self._timeout)
            self._owns_client = True
        return await get_json_object(self._client, self._url, accept=JWKS_MEDIA_TYPES, timeout_seconds=self._timeout)


def _parse_key_set(document: dict[str, Any]) -> KeySet:
    """The public signature keys of a JWK Set document; unusable members are skipped (RFC 7517 section 5)."""
    members = document.get("keys")
    if not isinstance(members, list):
        raise FetchError("no 'keys' array")
    keys: list[Key] = []
    for member in members:
        if not isinstance(member, dict) or member.get("kty") == "oct" or member.get("use", "sig") != "sig":
            continue
        if member.get("kty") == "RSA" and _rsa_modulus_bits(member.get("n")) < MIN_RSA_KEY_BITS:
            continue
        try:
            key = JWKRegistry.import_key(member)
            if key.is_private:
                key = JWKRegistry.import_key(key.as_dict(private=False))
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        keys.append(key)
    if not keys:
        raise FetchError("no usable keys")
    return KeySet(keys)


def _rsa_modulus_bits(n: object) -> int:
    """The size of an RSA JWK's modulus, checked before import (joserfc would only warn about a short key)."""
    if not isinstance(n, str):
        return 0
    try:
        modulus = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (binascii.Error, ValueError):
        return 0
    return int.from_bytes(modulus, "big").bit_length()


def _select(key_set: KeySet, kid: str | None, algorithm: str) -> Key | None:
    candidates = [key for key in key_set.keys if _can_verify(key, algorithm)]
    if kid is None:
        if len(candidates) > 1:
            raise InvalidToken("token has no key id and the issuer has several keys")
        return candidates[0] if candidates else None
    for key in candidates:
        if key.kid == kid:
            return key
    return None


def _can_verify(key: Key, algorithm: str) -> bool:
    model = JWSRegistry.algorithms.get(algorithm)
    if model is None or model.key_type == "oct":
        return False
    try:
        model.check_key(key)
    except JoseError:
        return False
    return True
