"""Passwords (argon2), access tokens (JWT, short-lived) and opaque random tokens (stored hashed)."""

import hashlib
import hmac
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from shared.config import get_settings

_hasher = PasswordHasher()
# Verified against when the account does not exist, so both answers take the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def session_auth_hash(password_hash: str) -> str:
    """HMAC-SHA256 of the user's stored password hash under SECRET_KEY (hex, 32 chars): an access
    token carries it, so changing the password ends every access token issued before (Django's
    `get_session_auth_hash` rule). Reveals nothing of the password: the input is a salted hash."""
    digest = hmac.new(get_settings().secret_key.encode(), password_hash.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def create_access_token(user_id: uuid.UUID, password_hash: str, session_id: uuid.UUID) -> tuple[str, int]:
    """A signed JWT (HS256) for `user_id`, valid `access_token_minutes`, bound to `password_hash`
    (see session_auth_hash) and to the sign-in session `session_id` (the refresh-token family, claim
    `sid` as in OpenID Connect): logging out ends the session and with it every access token it
    issued. Returns (token, seconds until it expires)."""
    s = get_settings()
    expires = s.access_token_minutes * 60
    payload = {
        "sub": str(user_id),
        "type": "access",
        "sid": str(session_id),
        "pwd": session_auth_hash(password_hash),
        "exp": datetime.now(UTC) + timedelta(seconds=expires),
        "iat": datetime.now(UTC),
    }
    return jwt.encode(payload, s.secret_key, algorithm="HS256"), expires


class AccessToken(NamedTuple):
    """The claims of a valid, unexpired access token."""

    user_id: uuid.UUID
    password_binding: str  # session_auth_hash of the password it was issued under
    session_id: uuid.UUID  # the refresh-token family (sign-in session) it belongs to

    def issued_under(self, password_hash: str) -> bool:
        """Whether the password is still the one the token was issued under."""
        return hmac.compare_digest(self.password_binding, session_auth_hash(password_hash))


class _Invalid(Exception):
    """Not a valid access token (raised, so that lru_cache never keeps a refusal)."""


@lru_cache(maxsize=4096)
def _verified(token: str, secret_key: str) -> tuple[AccessToken, float]:
    """The claims and expiry (Unix seconds) of a token whose signature and type check. Cached: a
    client polling a job sends the same token hundreds of times, and PyJWT's decoding (base64 checks
    in Python) is a large share of a status request's CPU. Only verified tokens are kept; the expiry
    is checked again on every use (decode_access_token)."""
    try:
        payload = jwt.decode(token, secret_key, algorithms=["HS256"], options={"require": ["exp"]})
        if payload.get("type") != "access":
            raise _Invalid
        claims = AccessToken(
            uuid.UUID(payload["sub"]), str(payload.get("pwd", "")), uuid.UUID(payload["sid"])
        )
        return claims, float(payload["exp"])
    except (jwt.PyJWTError, KeyError, ValueError, TypeError):
        raise _Invalid from None


def decode_access_token(token: str) -> AccessToken | None:
    """The claims of a valid, unexpired access token (signature and expiry checked); None otherwise."""
    try:
        claims, expires = _verified(token, get_settings().secret_key)
    except _Invalid:
        return None
    return claims if time.time() < expires else None


def new_opaque_token() -> tuple[str, str]:
    """A random token for the user and the sha256 we store (a database leak reveals no token)."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def subject_hash(user_id: uuid.UUID | str) -> str:
    """A stable pseudonym for audit rows: keyed by the secret, so it can't be reversed by guessing."""
    key = get_settings().secret_key.encode()
    return hashlib.blake2b(str(user_id).encode(), key=key[:64], digest_size=16).hexdigest()
