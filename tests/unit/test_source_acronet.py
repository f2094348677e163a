"""Acronet (webdrops) against its recorded responses on a local server (no network, no services)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest

from ionbeam_dagster.http import RetryPolicy
from ionbeam_dagster.sources.acronet import (
    CLASS_NAMES,
    KNOT,
    SCHEMA,
    Acronet,
    acronet_ingestion_map,
    station_id,
)
from ionbeam_dagster.sources.auth import AuthError
from ionbeam_dagster.sources.base import SourceError, fetch_notes
from tests.local_http import LocalServer, Reply, local_server
from tests.recorded_apis import ACRONET, ACRONET_DAY, KEYCLOAK_PATH, form, keycloak_sequence, load, serve_acronet

FAST = RetryPolicy(connect_timeout=2, read_timeout=5, max_attempts=3, backoff_initial=0.01, backoff_max=0.05, total_timeout=10)
DAY = datetime(2023, 6, 1, tzinfo=UTC)
USER, PASSWORD, SECRET = "acronet-user", "w3bdr0ps-Passw0rd!", "client-s3cret-value"
TOKEN, REFRESHED = load(ACRONET / "token.json"), load(ACRONET / "token_refreshed.json")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with local_server() as s:
        yield s


def source(server: LocalServer, clock: Clock | None = None, **env: str) -> Acronet:
    environ = {
        "IONBEAM_ACRONET_URL": server.url + "app/",
        "IONBEAM_ACRONET_TOKEN_URL": server.url.rstrip("/") + KEYCLOAK_PATH,
        "IONBEAM_ACRONET_USERNAME": USER,
        "IONBEAM_ACRONET_PASSWORD": PASSWORD,
        **env,
    }
    return Acronet(policy=FAST, environ=environ, clock=clock or Clock())


def fetch(src: Acronet, start: datetime = DAY, end: datetime = DAY + timedelta(days=1)):  # type: ignore[no-untyped-def]
    with src.http_client() as http:
        return src.fetch(start, end, http)


def recorded(cls: str) -> dict[str, tuple[str, dict[str, float]]]:
    """sensorId -> (station name, {timeline stamp: raw value}) as recorded for ``cls``."""
    names = {s["id"]: s["name"] for s in load(ACRONET / f"list_{cls}.json")}
    return {
        d["sensorId"]: (names.get(d["sensorId"], "?"), dict(zip(d["timeline"], d["values"], strict=True)))
        for d in load(ACRONET / f"data_{cls}_{ACRONET_DAY}.json")
    }


def stamp(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M")


def test_a_day_is_one_row_per_station_and_hour_with_every_class_and_documented_unit_handling(server: LocalServer) -> None:
    serve_acronet(server)
    table = fetch(source(server))

    assert table.schema.equals(SCHEMA, check_metadata=False)
    rows = {(r["station_id"], r["time"]): r for r in table.to_pylist()}
    # Two stations x 24 hours of [00:00, 24:00): the 00:00 of the next day belongs to the next
    # partition; the Fahrenheit thermometer is left out (see below).
    assert len(rows) == 48
    assert {r["station_name"] for r in rows.values()} == {"Campo Sportivo Bajardo", "Genova - Centro Funzionale"}
    for cls in CLASS_NAMES:
        for sensor_id, (name, values) in recorded(cls).items():
            if name in ("?", "Stazione Fahrenheit"):
                continue
            for hour in range(24):
                t = DAY + timedelta(hours=hour)
                raw = values[stamp(t)]
                stored = rows[(station_id(name), t)][cls]
                if raw < -9000:
                    assert stored is None, (cls, name, t)  # -9999 / -9998: missing
                elif cls == "ANEMOMETRO_RAFFICA":
                    assert stored == raw * KNOT and stored == pytest.approx(raw * 0.514444, rel=1e-5)  # Knots -> m s-1
                else:
                    assert stored == raw, (cls, name, t)  # as recorded, no conversion
    # Positions are the stations' (first class listed for them).
    bajardo = rows[("campo_sportivo_bajardo", DAY)]
    assert (bajardo["lat"], bajardo["lon"]) == (43.900158, 7.726422)
    notes = fetch_notes(table)
    assert notes["left_out"] == {"unknown_unit:TERMOMETRO:°F": 1, "unknown_sensor": 1}
    assert set(notes["classes"]) == set(CLASS_NAMES) and notes["classes_not_offered"] == []


def test_requests_are_the_documented_ones(server: LocalServer) -> None:
    serve_acronet(server)
    src = source(server)
    fetch(src)
    [grant] = server.requests_to(KEYCLOAK_PATH)
    assert form(grant.body) == {"grant_type": "password", "username": USER, "password": PASSWORD, "client_id": "webdrops"}
    assert grant.headers["Content-Type"] == "application/x-www-form-urlencoded"
    [listing] = server.requests_to("/app/sensors/list/TERMOMETRO")
    assert {k: v[0] for k, v in parse_qs(urlsplit(listing.path).query).items()} == {
        "stationgroup": "ComuneLive%IChange", "geowin": "6.0,36.0,18.6,47.5"}
    [data] = server.requests_to("/app/sensors/data/ANEMOMETRO_RAFFICA/all")
    assert {k: v[0] for k, v in parse_qs(urlsplit(data.path).query).items()} == {
        "from": "202306010000", "to": "202306020000", "aggr": "3600", "date_as_string": "true"}
    api = [s for s in server.seen if s.path.startswith("/app/")]
    assert {s.headers["Authorization"] for s in api} == {f"Bearer {TOKEN['access_token']}"}
    assert src.tokens is not None and (src.tokens.logins, src.tokens.refreshes) == (1, 0)


def test_a_401_is_answered_by_a_refresh_token_grant_and_the_request_is_sent_again(server: LocalServer) -> None:
    gate = serve_acronet(server)
    keycloak_sequence(server, Reply(200, json.dumps(TOKEN).encode()), Reply(200, json.dumps(REFRESHED).encode()))
    src = source(server)
    with src.http_client() as http:
        http.get_json(server.url + "app/sensors/classes")
        gate.valid = {REFRESHED["access_token"]}  # revoked early by the server
        classes = http.get_json(server.url + "app/sensors/classes")
    assert "TERMOMETRO" in classes
    password_grant, refresh_grant = server.requests_to(KEYCLOAK_PATH)
    assert form(refresh_grant.body) == {"grant_type": "refresh_token", "refresh_token": TOKEN["refresh_token"], "client_id": "webdrops"}
    sent = [s.headers["Authorization"] for s in server.requests_to("/app/sensors/classes")]
    assert sent == [f"Bearer {TOKEN['access_token']}"] * 2 + [f"Bearer {REFRESHED['access_token']}"]
    assert src.tokens is not None and (src.tokens.logins, src.tokens.refreshes) == (1, 1)


def test_the_token_is_refreshed_shortly_before_it_expires_without_waiting_for_a_401(server: LocalServer) -> None:
    gate = serve_acronet(server)
    gate.valid = {TOKEN["access_token"], REFRESHED["access_token"]}
    keycloak_sequence(server, Reply(200, json.dumps(TOKEN).encode()), Reply(200, json.dumps(REFRESHED).encode()))
    clock = Clock()
    src = source(server, clock)
    with src.http_client() as http:
        http.get_json(server.url + "app/sensors/classes")
        clock.now += TOKEN["expires_in"] - 60  # still 60 s left: no refresh
        http.get_json(server.url + "app/sensors/classes")
        clock.now += 45  # 15 s left, within the 30 s margin: refresh first
        http.get_json(server.url + "app/sensors/classes")
    assert gate.refused == 0
    grants = [form(r.body)["grant_type"] for r in server.requests_to(KEYCLOAK_PATH)]
    assert grants == ["password", "refresh_token"]
    sent = [s.headers["Authorization"] for s in server.requests_to("/app/sensors/classes")]
    assert sent[-1] == f"Bearer {REFRESHED['access_token']}"


def test_an_expired_refresh_token_falls_back_to_the_password_grant(server: LocalServer) -> None:
    gate = serve_acronet(server)
    second = {**TOKEN, "access_token": "eyJ.acr-access-3.sig", "refresh_token": "eyJ.acr-refresh-3.sig"}
    keycloak_sequence(
        server,
        Reply(200, json.dumps(TOKEN).encode()),
        Reply(400, b'{"error":"invalid_grant","error_description":"Token is not active"}'),
        Reply(200, json.dumps(second).encode()),
    )
    src = source(server)
    with src.http_client() as http:
        http.get_json(server.url + "app/sensors/classes")
        gate.valid = {second["access_token"]}
        http.get_json(server.url + "app/sensors/classes")
    grants = [form(r.body)["grant_type"] for r in server.requests_to(KEYCLOAK_PATH)]
    assert grants == ["password", "refresh_token", "password"]
    assert server.requests_to("/app/sensors/classes")[-1].headers["Authorization"] == f"Bearer {second['access_token']}"


def test_a_day_without_data_is_the_zero_row_table(server: LocalServer) -> None:
    serve_acronet(server, empty=True)
    table = fetch(source(server))
    assert table.num_rows == 0
    assert table.schema.equals(SCHEMA, check_metadata=False)
    imap = acronet_ingestion_map()
    assert {v.column for v in imap.canonical_variables} <= set(table.column_names)


def test_a_gust_sensor_that_does_not_say_its_unit_is_left_out_not_guessed(server: LocalServer) -> None:
    serve_acronet(server)
    listing = load(ACRONET / "list_ANEMOMETRO_RAFFICA.json")
    for item in listing:
        item["mu"] = ""
    server.route("/app/sensors/list/ANEMOMETRO_RAFFICA", Reply(200, json.dumps(listing).encode()))
    table = fetch(source(server))
    assert table.column("ANEMOMETRO_RAFFICA").null_count == table.num_rows
    assert fetch_notes(table)["left_out"]["unknown_unit:ANEMOMETRO_RAFFICA:"] == 2


def test_credentials_come_from_the_environment_and_never_show_in_errors(server: LocalServer, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SourceError, match="IONBEAM_ACRONET_USERNAME and IONBEAM_ACRONET_PASSWORD"):
        Acronet(environ={}).http_client()
    serve_acronet(server)
    echo = json.dumps({"error": "invalid_grant", "error_description": f"{USER}/{PASSWORD}/{SECRET}"}).encode()
    keycloak_sequence(server, Reply(401, echo))
    src = source(server, IONBEAM_ACRONET_CLIENT_SECRET=SECRET)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        fetch(src)
    text = str(info.value) + repr(info.value) + caplog.text + repr(src.tokens)
    assert "IONBEAM_ACRONET_PASSWORD" in str(info.value)
    for secret in (USER, PASSWORD, SECRET):
        assert secret not in text
    assert form(server.requests_to(KEYCLOAK_PATH)[0].body)["client_secret"] == SECRET
