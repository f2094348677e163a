"""Credentials and token providers shared by the authenticated sources.

Rules every provider here follows:
- Credentials come from the environment only, read when a run builds its HTTP client (never
  at code-location load, never from run config), and a missing one fails the run with the
  variable's *name*, never its value.
- Logins and refreshes go through a client of their own (not the data client: that one calls
  the provider while holding its lock), with the same timeouts and retries.
- Every error raised from here has the password, the username, the refresh token and the
  access tokens masked (:func:`ionbeam_dagster.http.redact` plus the known secrets), and is
  raised ``from None`` so no chained exception carries them into a traceback.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ionbeam_dagster.http import HttpClient, HttpError, HttpStatusError, RetryPolicy, redact
from ionbeam_dagster.sources.base import SourceError

__all__ = ["AuthError", "Credentials", "ExpiringTokenClient", "read_credentials"]


class AuthError(SourceError):
    """A login or token refresh that failed; the message is already redacted."""


class Credentials:
    """A username and password read from the environment. ``repr`` never shows them."""

    def __init__(self, username: str, password: str, *, extra_secrets: Iterable[str] = ()) -> None:
        self.username = username
        self.password = password
        self._extra = tuple(s for s in extra_secrets if s)

    def __repr__(self) -> str:
        return "Credentials(username=<redacted>, password=<redacted>)"

    def secrets(self) -> tuple[str, ...]:
        return (self.password, self.username, *self._extra)


def read_credentials(
    username_var: str, password_var: str, *, environ: Mapping[str, str] | None = None, network: str
) -> Credentials:
    """The username and password in ``username_var`` and ``password_var``; SourceError naming
    the variables that are missing (never any value)."""
    environ = os.environ if environ is None else environ
    username = (environ.get(username_var) or "").strip()
    password = environ.get(password_var) or ""
    missing = [name for name, value in ((username_var, username), (password_var, password)) if not value]
    if missing:
        raise SourceError(f"{network} needs credentials: set {' and '.join(missing)} in the environment")
    return Credentials(username, password)


class TokenState:
    """The tokens a provider holds, and the secrets to mask in its errors."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.access_token: str | None = None
        self.refresh_token: str | None = None
        #: monotonic time after which the access token should not be used (None: unknown)
        self.expires_at: float | None = None
        #: monotonic time after which the refresh token is refused (None: unknown)
        self.refresh_expires_at: float | None = None
        self.lock = threading.Lock()

    def secrets(self) -> list[str]:
        return [s for s in (*self.credentials.secrets(), self.access_token, self.refresh_token) if s]


def post_for_json(
    policy: RetryPolicy,
    user_agent: str,
    url: str,
    *,
    secrets: Callable[[], Iterable[str]],
    what: str,
    json_body: Any = None,
    form: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    """POST to an auth endpoint with a client of its own: (status, parsed JSON). A final error
    status is returned as (status, None) so the caller can choose to log in again; transport
    failures raise AuthError, redacted."""
    headers = {"Accept": "application/json"}
    try:
        with HttpClient(policy=policy, user_agent=user_agent) as http:
            response = http.request("POST", url, json_body=json_body, data=form, headers=headers, authenticate=False)
    except HttpStatusError as exc:
        return exc.status or 0, None
    except HttpError as exc:
        raise AuthError(f"{what} failed: {redact(str(exc), secrets())}") from None
    try:
        return response.status_code, response.json()
    except ValueError:
        excerpt = redact(response.text[:200], secrets())
        raise AuthError(f"{what}: the answer of {redact(url)} is not JSON: {excerpt!r}") from None


class ExpiringTokenClient(HttpClient):
    """An HttpClient that, before each request, lets a provider with an expiry swap the token
    it holds for a fresh one (a refresh shortly *before* expiry, rather than a 401 after it).

    The provider must have ``expires_soon() -> bool``; the 401 -> refresh -> retry path of
    :class:`HttpClient` stays as it is, for tokens revoked early or clocks that disagree."""

    def _current_token(self) -> str | None:
        tokens = self._tokens
        expires_soon = getattr(tokens, "expires_soon", None)
        if tokens is not None and callable(expires_soon):
            with self._lock:
                if self._token is not None and expires_soon():
                    self._token = self._remember(tokens.refresh())
        return super()._current_token()
