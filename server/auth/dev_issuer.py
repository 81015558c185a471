"""DEVELOPMENT ONLY: a local issuer of access tokens, so the server can be tried without an authorization server.

NEVER trust this issuer in production. Whoever can read its key file can mint any token with any scope for any
subject; a real deployment trusts its organisation's authorization server instead.

It signs RFC 9068 JWT access tokens (section 2.1 header ``typ: at+jwt``, section 2.2 claims) with an ES256 key
(RFC 7518 section 3.4, curve P-256) whose ``kid`` is the key's RFC 7638 thumbprint. The private key is kept as a JWK
(RFC 7517) in ``<data_dir>/dev-issuer/signing-key.json`` (file mode 0600, directory 0700), created on first use and
reused afterwards. The public key set is written next to it as ``jwks.json``, so a stdio server can trust the issuer
through a file path (``TrustedIssuer(jwks_uri=<path>)``) without any HTTP.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey

if TYPE_CHECKING:
    from server.auth.jwt_verifier import TrustedIssuer

logger = logging.getLogger(__name__)

ALGORITHM: Final = "ES256"
CURVE: Final = "P-256"
KEY_FILE: Final = "signing-key.json"
JWKS_FILE: Final = "jwks.json"


class DevIssuer:
    """DEVELOPMENT ONLY: mints access tokens with a locally stored key. Never trust it in production."""

    def __init__(self, key: ECKey, issuer_url: str, directory: Path) -> None:
        """Use ``load_or_create``; this takes an already loaded private key."""
        if not issuer_url:
            raise ValueError("the development issuer needs an issuer URL")
        if not key.is_private or key.curve_name != CURVE:
            raise ValueError(f"the development issuer signs with a private {CURVE} key")
        self._key = _with_metadata(key)
        self._issuer = issuer_url
        self._directory = directory

    @classmethod
    def load_or_create(cls, data_dir: Path, issuer_url: str) -> DevIssuer:
        """Load the signing key under ``data_dir``, generating and storing it (mode 0600) on first use."""
        directory = data_dir / "dev-issuer"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        key_path = directory / KEY_FILE
        try:
            key = _read_key(key_path)
        except FileNotFoundError:
            key = _with_metadata(ECKey.generate_key(CURVE, private=True))
            if _write_new_key(key_path, key):
                logger.warning("development issuer: generated a new signing key in %s (development only)", key_path)
            else:  # another process created it first: use theirs
                key = _read_key(key_path)
        return cls(key, issuer_url, directory)

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def kid(self) -> str:
        """The RFC 7638 thumbprint of the signing key."""
        return self._key.thumbprint()

    @property
    def jwks_path(self) -> Path:
        return self._directory / JWKS_FILE

    def public_jwks(self) -> dict[str, Any]:
        """The JWK Set with the public key only (no private ``d`` member)."""
        return {"keys": [dict(self._key.as_dict(private=False))]}

    def write_jwks_file(self) -> Path:
        """Write ``public_jwks()`` to ``jwks_path`` (replacing it atomically) and return the path."""
        data = json.dumps(self.public_jwks(), indent=2).encode()
        fd, tmp_name = tempfile.mkstemp(prefix=".jwks-", dir=self._directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            Path(tmp_name).chmod(0o644)
            Path(tmp_name).replace(self.jwks_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                Path(tmp_name).unlink()
            raise
        return self.jwks_path

    def trusted_issuer(self) -> TrustedIssuer:
        """How a verifier trusts this issuer: through the JWKS file (call ``write_jwks_file`` first)."""
        from server.auth.jwt_verifier import TrustedIssuer  # the verifier's HTTP stack is not needed to mint

        return TrustedIssuer(issuer=self._issuer, jwks_uri=str(self.jwks_path), algorithms=frozenset({ALGORITHM}))

    def mint(
        self,
        *,
        subject: str,
        client_id: str,
        scopes: Iterable[str],
        audience: str,
        ttl: timedelta = timedelta(hours=1),
        tenant: str | None = None,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed RFC 9068 access token. ``extra_claims`` may add claims (e.g. ``act``) but not replace one."""
        if ttl <= timedelta(0):
            raise ValueError("ttl must be positive")
        scope_list = sorted(set(scopes))
        if any(not scope or scope.split() != [scope] for scope in scope_list):
            raise ValueError("a scope is a non-empty string without spaces")
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "sub": subject,
            "aud": audience,
            "client_id": client_id,
            "scope": " ".join(scope_list),
            "iat": now,
            "nbf": now,
            "exp": now + int(ttl.total_seconds()),
            "jti": secrets.token_urlsafe(16),
        }
        if tenant is not None:
            claims["tenant"] = tenant
        if extra_claims:
            clashes = claims.keys() & extra_claims.keys()
            if clashes:
                raise ValueError(f"extra_claims may not replace {sorted(clashes)}")
            claims.update(extra_claims)
        header = {"alg": ALGORITHM, "typ": "at+jwt", "kid": self.kid}
        return jwt.encode(header, claims, self._key, algorithms=[ALGORITHM])


def _with_metadata(key: ECKey) -> ECKey:
    """The key with ``kid`` = RFC 7638 thumbprint, ``alg`` and ``use`` set."""
    data = {**key.as_dict(private=key.is_private), "kid": key.thumbprint(), "alg": ALGORITHM, "use": "sig"}
    return ECKey.import_key(data)


def _read_key(path: Path) -> ECKey:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        logger.warning("development issuer: %s was readable by others (mode %o); restricting it to 0600", path, mode)
        path.chmod(0o600)
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        key = ECKey.import_key(data)
    except (ValueError, TypeError, JoseError) as exc:
        raise ValueError(f"{path} does not hold a JWK; delete it to generate a new development key") from exc
    if not key.is_private or key.curve_name != CURVE:
        raise ValueError(f"{path} does not hold a private {CURVE} key; delete it to generate a new development key")
    return key


def _write_new_key(path: Path, key: ECKey) -> bool:
    """Create ``path`` (mode 0600) holding the private JWK, unless it exists; True when this call created it."""
    data = json.dumps(dict(key.as_dict(private=True))).encode()
    fd, tmp_name = tempfile.mkstemp(prefix=".signing-key-", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp_name, path)  # never replaces an existing key
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp_name).unlink()
