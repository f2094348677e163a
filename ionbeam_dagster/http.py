"""HTTP for data sources: timeouts, bounded retries, Retry-After, token refresh, no leaked secrets.

Why each rule:
- Every request has a connect and a read timeout, and the whole call (all attempts and the
  waits between them) a total time limit: a source run must end, not hang on one server.
- Connection errors, timeouts and 408/425/429/5xx are retried with exponential backoff and
  jitter (so many workers do not retry in lockstep). A ``Retry-After`` header (seconds or an
  HTTP date) replaces the backoff: the server knows when it can take us again. If the wait it
  asks for would pass the time limit, the call gives up at once instead of sleeping in vain.
- Any other 4xx is final: asking again will not change the answer.
- On a 401 the token provider is asked for a new token once, and the request is sent again;
  threads that hit the same expired token share one refresh.
- Credentials never reach logs or errors: URLs are shown with secret query parameters and
  passwords replaced, ``Authorization`` values and known tokens are masked in any text we
  raise, and urllib3's debug lines (which print request URLs) go through the same filter.
  Errors are raised ``from None`` so the original exception, which holds the raw URL, is not
  chained into tracebacks.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import requests

from ionbeam_dagster.errors import IonbeamError, TransientError

__all__ = [
    "DEFAULT_USER_AGENT",
    "HttpClient",
    "HttpError",
    "HttpStatusError",
    "HttpUnavailable",
    "RetryPolicy",
    "TokenProvider",
    "parse_retry_after",
    "redact",
]

DEFAULT_USER_AGENT = "ionbeam-dagster/0.1 (+https://github.com/ecmwf/ionbeam)"
# 408 and 425 are "try again" by definition; 429 and 5xx are load or outages.
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_REDACTED = "REDACTED"
# Query parameters (and form fields) whose value is a credential.
_SECRET_PARAM = re.compile(
    r"(?i)(?<![A-Za-z0-9_])("
    r"access_token|refresh_token|id_token|token|password|passwd|pwd|secret|client_secret|"
    r"api_key|apikey|api-key|key|signature|sig|auth|code"
    r")=([^&\s'\"#<>]+)"
)
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@/\s]+@")
_AUTH_VALUE = re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{6,}")
_BODY_EXCERPT = 300


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials masked: secret query parameters, URL passwords, Authorization
    values, and every string in ``secrets`` (tokens this client holds)."""
    text = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={_REDACTED}", text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}:{_REDACTED}@", text)
    text = _AUTH_VALUE.sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    for secret in secrets:
        # Very short strings would mask unrelated text and hide nothing worth hiding.
        if secret and len(secret) >= 6:
            text = text.replace(secret, _REDACTED)
    return text


class _RedactingFilter(logging.Filter):
    """urllib3 logs ``"GET /path?token=... HTTP/1.1" 200`` at debug level; mask it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is not ours to fix
            return True
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_RedactingFilter())


class HttpError(IonbeamError):
    """A request that did not succeed; ``url`` and the message are already redacted."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class HttpStatusError(HttpError):
    """A final error status (4xx other than the retryable ones, or 401 after a refresh)."""


class HttpUnavailable(HttpError, TransientError):
    """The server did not answer usefully within the retry budget; try the work again later."""


class TokenProvider(Protocol):
    """Where an authenticated source gets its bearer token (from the environment, never config)."""

    def token(self) -> str:
        """The current access token, logging in first if there is none yet."""
        ...

    def refresh(self) -> str:
        """A new access token after the server refused the current one (401)."""
        ...


@dataclass(frozen=True)
class RetryPolicy:
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: Tries per call, the first included.
    max_attempts: int = 6
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    #: Everything one call may take: attempts, waits, Retry-After.
    total_timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "backoff_max", "total_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: {getattr(self, name)!r} must be positive")
        if self.backoff_initial < 0:
            raise ValueError(f"backoff_initial: {self.backoff_initial!r} must not be negative")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: {self.max_attempts!r} must be at least 1")

    def backoff(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Wait before try ``attempt + 1``: doubling from ``backoff_initial``, capped, with
        jitter in [50 %, 100 %] so that clients that failed together do not retry together."""
        base = min(self.backoff_max, self.backoff_initial * 2 ** max(attempt - 1, 0))
        return base * (0.5 + 0.5 * rng())


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date), or None."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # HTTP dates are GMT by definition
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _display_url(url: str, params: Mapping[str, Any] | None) -> str:
    if params:
        try:
            url = requests.Request("GET", url, params=params).prepare().url or url
        except requests.RequestException:
            pass  # an invalid URL is reported by the request itself
    return redact(url)


class HttpClient:
    """A ``requests`` client for one source run. Thread-safe: each thread gets its own
    Session (connection pools are per thread), and token refreshes are serialised."""

    def __init__(
        self,
        *,
        policy: RetryPolicy | None = None,
        token_provider: TokenProvider | None = None,
        auth_scheme: str = "Bearer",
        user_agent: str = DEFAULT_USER_AGENT,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy or RetryPolicy()
        self._tokens = token_provider
        self._auth_scheme = auth_scheme
        self._headers = {"User-Agent": user_agent, **(headers or {})}
        self._sleep = sleep
        self._clock = clock
        self._rng = rng
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._token: str | None = None
        self._secrets: set[str] = set()

    # ----------------------------------------------------------------- lifecycle

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update(self._headers)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    # ----------------------------------------------------------------- auth

    def _current_token(self) -> str | None:
        if self._tokens is None:
            return None
        with self._lock:
            if self._token is None:
                self._token = self._remember(self._tokens.token())
            return self._token

    def _refresh_token(self, refused: str | None) -> None:
        assert self._tokens is not None
        with self._lock:
            # Another thread may have refreshed while this request was in flight.
            if self._token == refused:
                self._token = self._remember(self._tokens.refresh())

    def _remember(self, token: str) -> str:
        if not isinstance(token, str) or not token:
            raise HttpError("token provider returned no token", url="")
        self._secrets.add(token)
        return token

    def redact(self, text: str) -> str:
        return redact(text, self._secrets)

    # ----------------------------------------------------------------- requests

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", url, **kwargs)

    def get_bytes(self, url: str, **kwargs: Any) -> bytes:
        return self.request("GET", url, **kwargs).content

    def get_json(self, url: str, **kwargs: Any) -> Any:
        response = self.request("GET", url, **kwargs)
        try:
            return json.loads(response.content)
        except ValueError as exc:
            shown = _display_url(url, kwargs.get("params"))
            raise HttpError(
                f"GET {shown}: the response is not JSON ({exc}); it starts with "
                f"{self.redact(response.text[:_BODY_EXCERPT])!r}",
                url=shown,
                status=response.status_code,
            ) from None

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        json_body: Any = None,
        authenticate: bool = True,
    ) -> requests.Response:
        """Send with retries; the body is read before returning (no streaming). Raises
        HttpStatusError for a final error status, HttpUnavailable when retries run out."""
        shown = _display_url(url, params)
        started = self._clock()
        deadline = started + self.policy.total_timeout
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise HttpUnavailable(
                    f"{method} {shown}: no answer within the total time limit of {self.policy.total_timeout:g} s",
                    url=shown,
                )
            token = self._current_token() if authenticate else None
            send_headers = dict(headers or {})
            if token is not None:
                send_headers["Authorization"] = f"{self._auth_scheme} {token}"
            timeout = (min(self.policy.connect_timeout, remaining), min(self.policy.read_timeout, remaining))
            try:
                response = self._session().request(
                    method, url, params=params, headers=send_headers, data=data, json=json_body, timeout=timeout
                )
                response.content  # read the body here, so a broken transfer is retried too
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                requests.exceptions.ContentDecodingError,
            ) as exc:
                problem = f"{type(exc).__name__}: {self.redact(str(exc))}"
                self._wait(method, shown, attempt, started, deadline, problem, None)
                continue
            except requests.RequestException as exc:
                # Invalid URL, bad scheme, too many redirects: no retry can help.
                raise HttpError(f"{method} {shown}: {type(exc).__name__}: {self.redact(str(exc))}", url=shown) from None

            status = response.status_code
            if status == 401 and token is not None and not refreshed:
                refreshed = True
                self._refresh_token(token)
                continue
            if status in RETRY_STATUSES:
                problem = f"HTTP {status} {response.reason or ''}".rstrip()
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                self._wait(method, shown, attempt, started, deadline, problem, retry_after)
                continue
            if status >= 400:
                excerpt = self.redact(response.text[:_BODY_EXCERPT]).strip()
                after = " even after a token refresh" if status == 401 and refreshed else ""
                raise HttpStatusError(
                    f"{method} {shown}: HTTP {status} {response.reason or ''}{after}".rstrip()
                    + (f": {excerpt!r}" if excerpt else ""),
                    url=shown,
                    status=status,
                )
            return response

    def _wait(
        self,
        method: str,
        shown: str,
        attempt: int,
        started: float,
        deadline: float,
        problem: str,
        retry_after: float | None,
    ) -> None:
        elapsed = self._clock() - started
        if attempt >= self.policy.max_attempts:
            raise HttpUnavailable(
                f"{method} {shown}: gave up after {attempt} attempts in {elapsed:.1f} s; last: {problem}", url=shown
            )
        delay = retry_after if retry_after is not None else self.policy.backoff(attempt, self._rng)
        if self._clock() + delay > deadline:
            asked = f"the server asked to retry after {delay:g} s" if retry_after is not None else f"the next try is in {delay:.1f} s"
            raise HttpUnavailable(
                f"{method} {shown}: {problem}; {asked}, past the total time limit of "
                f"{self.policy.total_timeout:g} s (attempt {attempt}, {elapsed:.1f} s so far)",
                url=shown,
            )
        self._sleep(delay)
