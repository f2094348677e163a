"""MeteoTracker against its recorded responses on a local server (no network, no services)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from ionbeam_dagster.http import HttpStatusError, RetryPolicy
from ionbeam_dagster.sources.auth import AuthError
from ionbeam_dagster.sources.base import SourceError, fetch_notes
from ionbeam_dagster.sources.meteotracker import SCHEMA, VALUE_COLUMNS, MeteoTracker, meteotracker_ingestion_map
from tests.local_http import LocalServer, Reply, local_server
from tests.recorded_apis import MT, MT_PAGE_SIZE, MT_SESSIONS, load, mt_points, serve_meteotracker

FAST = RetryPolicy(connect_timeout=2, read_timeout=5, max_attempts=3, backoff_initial=0.01, backoff_max=0.05, total_timeout=10)
DAY = datetime(2023, 6, 1, tzinfo=UTC)
USER, PASSWORD = "forecaster@example.org", "s3cret-Passw0rd!"
LOGIN, REFRESHED = load(MT / "login.json"), load(MT / "refresh.json")


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        yield s


def source(server: LocalServer, **env: str) -> MeteoTracker:
    environ = {"IONBEAM_METEOTRACKER_URL": server.url, "IONBEAM_METEOTRACKER_USERNAME": USER,
               "IONBEAM_METEOTRACKER_PASSWORD": PASSWORD, **env}
    return MeteoTracker(page_size=MT_PAGE_SIZE, policy=FAST, environ=environ)


def fetch(src: MeteoTracker, start: datetime = DAY, end: datetime = DAY + timedelta(days=1)):  # type: ignore[no-untyped-def]
    with src.http_client() as http:
        return src.fetch(start, end, http)


def expected_points(start: datetime = DAY, end: datetime = DAY + timedelta(days=1)) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for page in MT_SESSIONS:
        for session in page:
            for point in mt_points(session["_id"]):
                t = datetime.fromisoformat(point["time"].replace("Z", "+00:00"))
                if start <= t < end:
                    out.append({**point, "_id": session["_id"], "by": session["by"], "t": t})
    return out


def query(seen_path: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(seen_path).query).items()}


def test_a_day_is_login_then_paged_session_search_then_points_and_only_the_days_points_are_kept(server: LocalServer) -> None:
    serve_meteotracker(server)
    src = source(server)
    table = fetch(src)

    assert table.schema.equals(SCHEMA, check_metadata=False)
    expected = expected_points()
    # The first session started at 23:50 the day before: its two points before midnight are not
    # part of this day, its three after midnight are. 3 + 4 + 3 points.
    assert table.num_rows == len(expected) == 10
    rows = sorted(table.to_pylist(), key=lambda r: r["time"])
    for row, point in zip(rows, sorted(expected, key=lambda p: p["t"]), strict=True):
        assert row["time"] == point["t"]
        assert (row["lon"], row["lat"]) == tuple(point["lo"])  # "lo" is [lon, lat]
        assert row["session_id"] == point["_id"] and row["author"] == point["by"]
        for key in VALUE_COLUMNS:
            value = point.get(key)
            assert row[key] == value if value is not None else row[key] is None, (key, row, point)

    # Login: JSON email/password, once; every API call carries the access token.
    [login] = server.requests_to("/auth/login/api")
    assert json.loads(login.body) == {"email": USER, "password": PASSWORD}
    api = server.requests_to("/api/sessions") + server.requests_to("/api/points/session")
    assert {r.headers["Authorization"] for r in api} == {f"Bearer {LOGIN['accessToken']}"}
    # Search: pages 0 and 1 (page 1 is short), by start time from the lookback to the end.
    searches = [query(r.path) for r in server.requests_to("/api/sessions")]
    assert [s["page"] for s in searches] == ["0", "1"]
    assert {s["items"] for s in searches} == {str(MT_PAGE_SIZE)} and {s["dataType"] for s in searches} == {"all"}
    lo, hi = int((DAY - timedelta(hours=12)).timestamp()), int((DAY + timedelta(days=1)).timestamp())
    assert {s["startTime"] for s in searches} == {f'{{"$gte":{lo},"$lte":{hi}}}'}
    # Points: the paged session is read until its nPoints are in; variables as one spaced list.
    point_queries = [query(r.path) for r in server.requests_to("/api/points/session")]
    assert [q["page"] for q in point_queries if q["id"] == "6478f0e1d2c3b4a501234569"] == ["0", "1"]
    assert all(q["data"].split()[:3] == ["time", "lo", "a"] and "T0" in q["data"].split() for q in point_queries)
    notes = fetch_notes(table)
    assert notes["sessions_found"] == 3 and notes["sessions_read"] == 3 and notes["points_read"] == 12
    assert src.tokens is not None and (src.tokens.logins, src.tokens.refreshes) == (1, 0)


def test_missing_and_absent_values_are_nulls(server: LocalServer) -> None:
    serve_meteotracker(server)
    rows = {r["time"]: r for r in fetch(source(server)).to_pylist()}
    bologna = [rows[p["t"]] for p in expected_points() if p["_id"] == "6478a1b2c3d4e5f601234568"]
    assert bologna[1]["H"] is None  # recorded as null
    assert bologna[2]["td"] is None  # absent from the point
    assert (bologna[3]["m2"], bologna[3]["m10"]) == (7.4, 11.9)  # only this point has PM
    assert all(math.isfinite(r["T0"]) for r in bologna)


def test_a_401_refreshes_with_the_refresh_token_and_retries_with_the_refreshed_access_token(server: LocalServer) -> None:
    """Regression for the reference's refresh bug: it read ``access_token`` from the refresh
    answer, whose key is ``accessToken``, so the retry never carried the new token."""
    gate = serve_meteotracker(server)
    src = source(server)
    with src.http_client() as http:
        src.search_sessions(DAY, DAY + timedelta(hours=1), http)  # logged in, token accepted
        gate.valid = {REFRESHED["accessToken"]}  # the server expires the login's token
        sessions = src.search_sessions(DAY, DAY + timedelta(hours=1), http)

    assert [s["id"] for s in sessions] == [s["_id"] for page in MT_SESSIONS for s in page]
    [refresh] = server.requests_to("/auth/refreshtoken")
    assert json.loads(refresh.body) == {"refreshToken": LOGIN["refreshToken"]}
    # First search: pages 0 and 1 with the login's token. Second: page 0 refused (401), the
    # refresh, page 0 again and page 1 with the refreshed token.
    sent = [r.headers["Authorization"] for r in server.requests_to("/api/sessions")]
    old, new = f"Bearer {LOGIN['accessToken']}", f"Bearer {REFRESHED['accessToken']}"
    assert sent == [old, old, old, new, new]
    retried = server.requests_to("/api/sessions")[3]
    assert retried.at >= refresh.at and query(retried.path)["page"] == "0"
    assert src.tokens is not None and (src.tokens.logins, src.tokens.refreshes) == (1, 1)
    assert len(server.requests_to("/auth/login/api")) == 1  # refreshed, not logged in again


def test_a_refused_refresh_falls_back_to_a_new_login(server: LocalServer) -> None:
    gate = serve_meteotracker(server)
    second_login = {"accessToken": "eyJ.mt-access-3.sig", "refreshToken": "eyJ.mt-refresh-3.sig"}
    server.route("/auth/login/api", Reply(200, json.dumps(LOGIN).encode()), Reply(200, json.dumps(second_login).encode()))
    server.route("/auth/refreshtoken", Reply(401, b'{"message":"Refresh token expired"}'))
    src = source(server)
    with src.http_client() as http:
        src.search_sessions(DAY, DAY + timedelta(hours=1), http)
        gate.valid = {second_login["accessToken"]}
        src.search_sessions(DAY, DAY + timedelta(hours=1), http)
    assert len(server.requests_to("/auth/login/api")) == 2
    assert server.requests_to("/api/sessions")[-1].headers["Authorization"] == f"Bearer {second_login['accessToken']}"


def test_a_refresh_answer_without_accessToken_is_not_used_as_a_token(server: LocalServer) -> None:
    """The reference's shape (``access_token``) must not be taken for a token either way: an
    answer without ``accessToken`` means log in again, never ``Bearer None``."""
    gate = serve_meteotracker(server)
    server.route("/auth/refreshtoken", Reply(200, json.dumps({"ok": True}).encode()))
    src = source(server)
    with src.http_client() as http:
        src.search_sessions(DAY, DAY + timedelta(hours=1), http)
        gate.valid = set()  # every token refused from now on
        with pytest.raises(HttpStatusError, match="401"):
            src.search_sessions(DAY, DAY + timedelta(hours=1), http)
    sent = {r.headers.get("Authorization") for r in server.requests_to("/api/sessions")}
    assert "Bearer None" not in sent and all(s and s.startswith("Bearer eyJ") for s in sent)
    assert len(server.requests_to("/auth/login/api")) == 2


def test_a_day_without_sessions_is_the_zero_row_table(server: LocalServer) -> None:
    serve_meteotracker(server, empty=True)
    table = fetch(source(server))
    assert table.num_rows == 0
    assert table.schema.equals(SCHEMA, check_metadata=False)
    imap = meteotracker_ingestion_map()
    assert {imap.datetime.column, imap.lat.column, imap.lon.column, *VALUE_COLUMNS, "session_id"} <= set(table.column_names)


def test_credentials_come_from_the_environment_and_never_show_in_errors(server: LocalServer, caplog: pytest.LogCaptureFixture) -> None:
    src = MeteoTracker(policy=FAST, environ={"IONBEAM_METEOTRACKER_URL": server.url})
    with pytest.raises(SourceError, match="IONBEAM_METEOTRACKER_USERNAME and IONBEAM_METEOTRACKER_PASSWORD"):
        src.http_client()

    # A login refused with an answer that echoes the credentials: the error names the
    # variables, and neither the password nor the username appears anywhere.
    server.route("/auth/login/api", Reply(401, json.dumps({"error": f"bad password {PASSWORD} for {USER}"}).encode()))
    serve_routes_without_login = source(server)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info, serve_routes_without_login.http_client() as http:
        serve_routes_without_login.search_sessions(DAY, DAY + timedelta(hours=1), http)
    text = str(info.value) + repr(info.value) + caplog.text + repr(serve_routes_without_login.tokens)
    assert "IONBEAM_METEOTRACKER_PASSWORD" in str(info.value)
    assert PASSWORD not in text and USER not in text
    assert info.value.__cause__ is None and (info.value.__context__ is None or info.value.__suppress_context__)


def test_a_session_search_that_never_ends_fails_instead_of_publishing_part_of_the_day(server: LocalServer,
                                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import ionbeam_dagster.sources.meteotracker as mt

    monkeypatch.setattr(mt, "MAX_PAGES", 3)
    serve_meteotracker(server)
    server.route("/api/sessions", Reply(200, json.dumps(MT_SESSIONS[0]).encode()))  # always a full page
    with pytest.raises(SourceError, match="did not end after 3 pages"):
        fetch(source(server))
