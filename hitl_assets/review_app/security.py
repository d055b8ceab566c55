"""Secrets, password hashing, signed session cookies, CSRF tokens and the failed-login limiter."""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

SECRET_ENV = "HITL_REVIEW_SECRET"
SECRET_FILE_NAME = "review_secret"
SESSION_COOKIE = "hitl_session"
PRELOGIN_COOKIE = "hitl_prelogin"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_MAX_AGE_S = 12 * 3600

_hasher = PasswordHasher()
# Verifying against this keeps a login for an unknown name as slow as one with a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def load_secret(home: str | os.PathLike | None = None) -> str:
    """The session signing key: HITL_REVIEW_SECRET, else a generated key kept in a 0600 file under HITL_HOME.

    The key is never logged or printed.
    """
    from_env = os.environ.get(SECRET_ENV, "")
    if from_env:
        if len(from_env) < 16:
            raise ValueError(f"{SECRET_ENV} must be at least 16 characters")
        return from_env
    home = Path(home or os.environ.get("HITL_HOME", ".hitl"))
    home.mkdir(parents=True, exist_ok=True)
    path = home / SECRET_FILE_NAME
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        os.chmod(path, 0o600)
        value = path.read_text().strip()
        if len(value) >= 16:
            return value
        raise ValueError(f"{path} holds no usable secret; remove it to generate a new one")
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``."""
    if len(password) < 8:
        raise ValueError("a password needs at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; constant work whether or not the account exists."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


class Sessions:
    """Signed, timestamped cookie payloads (itsdangerous); each session carries its own CSRF token."""

    def __init__(self, secret: str):
        self._serializer = URLSafeTimedSerializer(secret, salt="hitl-review-session")
        self._prelogin = URLSafeTimedSerializer(secret, salt="hitl-review-prelogin")

    def issue(self, user: str) -> tuple[str, str]:
        csrf = secrets.token_urlsafe(32)
        return self._serializer.dumps({"u": user, "c": csrf, "n": secrets.token_hex(8)}), csrf

    def read(self, cookie: str | None) -> dict | None:
        if not cookie:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=SESSION_MAX_AGE_S)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("u"), str) or not isinstance(data.get("c"), str):
            return None
        return data

    def issue_prelogin(self) -> tuple[str, str]:
        csrf = secrets.token_urlsafe(32)
        return self._prelogin.dumps({"c": csrf}), csrf

    def read_prelogin(self, cookie: str | None) -> str | None:
        if not cookie:
            return None
        try:
            data = self._prelogin.loads(cookie, max_age=3600)
        except BadSignature:
            return None
        return data.get("c") if isinstance(data, dict) and isinstance(data.get("c"), str) else None


def tokens_equal(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))


class LoginLimiter:
    """Failed logins per user name and per client address in a sliding window; too many: refused for a while."""

    def __init__(self, max_failures: int = 5, window_s: float = 300.0, clock=time.monotonic):
        self.max_failures, self.window_s, self._clock = max_failures, window_s, clock
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str) -> deque:
        now = self._clock()
        entries = self._failures.setdefault(key, deque())
        while entries and now - entries[0] > self.window_s:
            entries.popleft()
        return entries

    def retry_after(self, *keys: str) -> int:
        """Seconds until another attempt is allowed (0: allowed now)."""
        with self._lock:
            wait = 0.0
            for key in keys:
                entries = self._recent(key)
                if len(entries) >= self.max_failures:
                    wait = max(wait, self.window_s - (self._clock() - entries[-self.max_failures]))
            return int(wait) + 1 if wait > 0 else 0

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._recent(key).append(self._clock())

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)
