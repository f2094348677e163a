"""The sources' HTTP client against a real HTTP server on 127.0.0.1 (no network, no services)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from ionbeam_dagster.errors import TransientError
from ionbeam_dagster.http import (
    HttpClient,
    HttpError,
    HttpStatusError,
    HttpUnavailable,
    RetryPolicy,
    parse_retry_after,
    redact,
)
from tests.conftest import free_port
from tests.local_http import LocalServer, Reply, local_server

FAST = RetryPolicy(connect_timeout=2, read_timeout=5, max_attempts=5, backoff_initial=0.01, backoff_max=0.05, total_timeout=10)


@pytest.fixture
def server() -> LocalServer:
    with local_server() as s:
        yield s


def test_429_then_200_waits_as_long_as_retry_after_says(server: LocalServer) -> None:
    server.route("/data", Reply(429, b"slow down", {"Retry-After": "1"}), Reply(200, b"ok"))
    with HttpClient(policy=FAST) as http:
        started = time.monotonic()
        assert http.get_bytes(server.url + "data") == b"ok"
        elapsed = time.monotonic() - started
    first, second = server.requests_to("/data")
    # The retry came after the second the server asked for, not after the 10 ms backoff.
    assert second.at - first.at >= 0.95
    assert elapsed >= 0.95


def test_retry_after_as_an_http_date_is_honoured(server: LocalServer) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=2), usegmt=True)
    server.route("/data", Reply(503, b"", {"Retry-After": when}), Reply(200, b"ok"))
    with HttpClient(policy=FAST) as http:
        assert http.get_bytes(server.url + "data") == b"ok"
    first, second = server.requests_to("/data")
    # HTTP dates have whole seconds, so the wait is between 1 and 2 s.
    assert second.at - first.at >= 0.9


def test_parse_retry_after() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 5 ") == 5.0
    assert parse_retry_after("Mon, 01 Jan 2024 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 31 Dec 2023 23:00:00 GMT", now) == 0.0  # in the past: now
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_a_retry_after_beyond_the_time_limit_gives_up_at_once(server: LocalServer) -> None:
    server.route("/data", Reply(429, b"", {"Retry-After": "3600"}))
    policy = RetryPolicy(max_attempts=5, backoff_initial=0.01, total_timeout=5)
    with HttpClient(policy=policy) as http:
        started = time.monotonic()
        with pytest.raises(HttpUnavailable) as info:
            http.get(server.url + "data")
    assert time.monotonic() - started < 2
    assert "3600" in str(info.value) and "total time limit" in str(info.value)
    assert isinstance(info.value, TransientError)  # the run fails and is retried, nothing is dead-lettered
    assert len(server.requests_to("/data")) == 1


def test_5xx_is_retried_with_backoff_until_the_attempts_run_out(server: LocalServer) -> None:
    server.route("/data", Reply(502, b"bad gateway"))
    with HttpClient(policy=FAST) as http:
        with pytest.raises(HttpUnavailable) as info:
            http.get(server.url + "data")
    assert len(server.requests_to("/data")) == FAST.max_attempts
    assert "gave up after 5 attempts" in str(info.value) and "502" in str(info.value)


def test_connection_errors_are_retried() -> None:
    port = free_port()  # nothing listens there
    with HttpClient(policy=RetryPolicy(max_attempts=3, backoff_initial=0.01, total_timeout=10)) as http:
        with pytest.raises(HttpUnavailable) as info:
            http.get(f"http://127.0.0.1:{port}/x")
    assert "gave up after 3 attempts" in str(info.value) and "ConnectionError" in str(info.value)


def test_a_dropped_connection_then_success(server: LocalServer) -> None:
    server.route("/data", Reply(drop=True), Reply(200, b"ok"))
    with HttpClient(policy=FAST) as http:
        assert http.get_bytes(server.url + "data") == b"ok"
    assert len(server.requests_to("/data")) == 2


def test_the_total_time_bounds_slow_servers(server: LocalServer) -> None:
    def slow(path: str, headers: dict[str, str]) -> Reply:
        time.sleep(1.5)
        return Reply(200, b"late")

    server.route("/slow", slow)
    policy = RetryPolicy(connect_timeout=1, read_timeout=0.5, max_attempts=10, backoff_initial=0.05, total_timeout=2)
    with HttpClient(policy=policy) as http:
        started = time.monotonic()
        with pytest.raises(HttpUnavailable):
            http.get(server.url + "slow")
    assert time.monotonic() - started < 4


def test_other_4xx_are_final(server: LocalServer) -> None:
    server.route("/missing", Reply(404, b"no such day"))
    with HttpClient(policy=FAST) as http:
        with pytest.raises(HttpStatusError) as info:
            http.get(server.url + "missing")
    assert info.value.status == 404 and "no such day" in str(info.value)
    assert len(server.requests_to("/missing")) == 1


class Tokens:
    def __init__(self) -> None:
        self.issued = ["first-token-abc", "second-token-def"]
        self.refreshes = 0
        self.current = self.issued[0]

    def token(self) -> str:
        return self.current

    def refresh(self) -> str:
        self.refreshes += 1
        self.current = self.issued[min(self.refreshes, len(self.issued) - 1)]
        return self.current


def test_401_refreshes_the_token_once_and_retries(server: LocalServer) -> None:
    def guarded(path: str, headers: dict[str, str]) -> Reply:
        ok = headers.get("Authorization") == "Bearer second-token-def"
        return Reply(200, b"secret data") if ok else Reply(401, b"expired")

    server.route("/me", guarded)
    tokens = Tokens()
    with HttpClient(policy=FAST, token_provider=tokens) as http:
        assert http.get_bytes(server.url + "me") == b"secret data"
        assert http.get_bytes(server.url + "me") == b"secret data"  # the new token is kept
    assert tokens.refreshes == 1
    assert [s.headers["Authorization"] for s in server.requests_to("/me")] == [
        "Bearer first-token-abc",
        "Bearer second-token-def",
        "Bearer second-token-def",
    ]


def test_a_second_401_is_final_and_hides_the_token(server: LocalServer) -> None:
    server.route("/me", Reply(401, b"token second-token-def is not valid"))
    tokens = Tokens()
    with HttpClient(policy=FAST, token_provider=tokens) as http:
        with pytest.raises(HttpStatusError) as info:
            http.get(server.url + "me")
    assert tokens.refreshes == 1
    assert info.value.status == 401 and "after a token refresh" in str(info.value)
    assert "second-token-def" not in str(info.value) and "REDACTED" in str(info.value)


def test_credentials_in_urls_never_reach_errors_or_logs(server: LocalServer, caplog: pytest.LogCaptureFixture) -> None:
    server.route("/api", Reply(400, b"bad request"))
    caplog.set_level(logging.DEBUG, logger="urllib3")
    with HttpClient(policy=FAST) as http:
        with pytest.raises(HttpStatusError) as info:
            http.get(server.url + "api", params={"token": "s3cr3t-value", "q": "visible", "password": "hunter22"})
        port = free_port()
        with pytest.raises(HttpUnavailable) as down:
            http.get(f"http://user:pa55word@127.0.0.1:{port}/x?api_key=k3y-value-123")
    text = str(info.value) + str(down.value) + caplog.text
    for secret in ("s3cr3t-value", "hunter22", "pa55word", "k3y-value-123"):
        assert secret not in text
    assert "q=visible" in str(info.value) and "token=REDACTED" in str(info.value)
    assert info.value.__cause__ is None and down.value.__cause__ is None


def test_redact() -> None:
    assert redact("GET https://x/y?access_token=abc&x=1") == "GET https://x/y?access_token=REDACTED&x=1"
    assert redact("Authorization: Bearer eyJhbGciOi.x.y") == "Authorization: Bearer REDACTED"
    assert redact("amqp://guest:guest@host/") == "amqp://guest:REDACTED@host/"
    assert redact("password=pw&sensor_key=ok") == "password=REDACTED&sensor_key=ok"
    assert redact("contains mytoken123 here", ["mytoken123"]) == "contains REDACTED here"


def test_non_json_is_a_clear_error(server: LocalServer) -> None:
    server.route("/json", Reply(200, b"<html>maintenance</html>"))
    with HttpClient(policy=FAST) as http:
        with pytest.raises(HttpError) as info:
            http.get_json(server.url + "json")
    assert "not JSON" in str(info.value) and "maintenance" in str(info.value)


def test_the_user_agent_is_sent(server: LocalServer) -> None:
    server.route("/ua", Reply(200, b"[]"))
    with HttpClient(policy=FAST, user_agent="ionbeam-test (ops@example.org)") as http:
        assert http.get_json(server.url + "ua") == []
    assert server.requests_to("/ua")[0].headers["User-Agent"] == "ionbeam-test (ops@example.org)"


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="total_timeout"):
        RetryPolicy(total_timeout=0)
    backoffs = [RetryPolicy(backoff_initial=1, backoff_max=8).backoff(n, lambda: 1.0) for n in range(1, 6)]
    assert backoffs == [1, 2, 4, 8, 8]
