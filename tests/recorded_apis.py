"""MeteoTracker and webdrops (Acronet) as a local server: the recorded responses of
``tests/fixtures/<network>/`` behind the endpoints the real APIs have, with bearer-token
checks, so tests see logins, refreshes, 401s and paging the way the sources would.

The fixtures are written in the APIs' real formats (see the README next to them); a test
reads the same files to know what the pipeline must end up holding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.local_http import LocalServer, Reply

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MT = FIXTURES / "meteotracker"
ACRONET = FIXTURES / "acronet"
JSON = {"Content-Type": "application/json; charset=utf-8"}


def load(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _json(value: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(value).encode(), dict(JSON))


def _query(path: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}


@dataclass
class TokenGate:
    """Which bearer tokens the API accepts right now (a test revokes one to force a 401)."""

    valid: set[str] = field(default_factory=set)
    refused: int = 0

    def check(self, headers: dict[str, str]) -> Reply | None:
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer "):] in self.valid:
            return None
        self.refused += 1
        return Reply(401, b'{"error":"Unauthorized"}', dict(JSON))


# ---------------------------------------------------------------- MeteoTracker

MT_DAY = "2023-06-01"
MT_SESSIONS = [load(MT / f"sessions_{MT_DAY}_page{n}.json") for n in (0, 1)]
MT_PAGE_SIZE = 2  # the recorded search pages hold 2 + 1 sessions


def mt_points(session_id: str) -> list[dict[str, Any]]:
    single = MT / f"points_{session_id}.json"
    if single.exists():
        return load(single)
    return [p for n in range(10) if (MT / f"points_{session_id}_page{n}.json").exists()
            for p in load(MT / f"points_{session_id}_page{n}.json")]


def serve_meteotracker(server: LocalServer, *, empty: bool = False) -> TokenGate:
    """Routes of app.meteotracker.com on ``server``; returns the gate (valid: the login token)."""
    login, refreshed = load(MT / "login.json"), load(MT / "refresh.json")
    gate = TokenGate({login["accessToken"]})
    server.route("/auth/login/api", _json(login))
    server.route("/auth/refreshtoken", _json(refreshed))

    def sessions(path: str, headers: dict[str, str]) -> Reply:
        if (refused := gate.check(headers)) is not None:
            return refused
        page = int(_query(path).get("page", "0"))
        if empty or page >= len(MT_SESSIONS):
            return _json([])
        return _json(MT_SESSIONS[page])

    def points(path: str, headers: dict[str, str]) -> Reply:
        if (refused := gate.check(headers)) is not None:
            return refused
        q = _query(path)
        single = MT / f"points_{q['id']}.json"
        if single.exists():  # this session is answered whole, whatever page is asked
            return _json(load(single))
        paged = MT / f"points_{q['id']}_page{int(q.get('page', '0'))}.json"
        return _json(load(paged) if paged.exists() else [])

    server.route("/api/sessions", sessions)
    server.route("/api/points/session", points)
    return gate


# ---------------------------------------------------------------- webdrops (Acronet)

ACRONET_DAY = "20230601"
KEYCLOAK_PATH = "/auth/realms/webdrops/protocol/openid-connect/token"


def acronet_classes_served() -> list[str]:
    return [p.name[len("list_"):-len(".json")] for p in sorted(ACRONET.glob("list_*.json"))]


def serve_acronet(server: LocalServer, *, empty: bool = False) -> TokenGate:
    """Keycloak on ``KEYCLOAK_PATH`` and webdrops under ``/app/``; returns the gate."""
    token = load(ACRONET / "token.json")
    gate = TokenGate({token["access_token"]})

    # The password grant's answer; tests route other sequences with keycloak_sequence().
    server.route(KEYCLOAK_PATH, _json(token))

    def guarded(reply_for: Any) -> Any:
        def responder(path: str, headers: dict[str, str]) -> Reply:
            if (refused := gate.check(headers)) is not None:
                return refused
            return reply_for(path)
        return responder

    server.route("/app/sensors/classes", guarded(lambda path: _json(load(ACRONET / "classes.json"))))
    for cls in acronet_classes_served():
        server.route(f"/app/sensors/list/{cls}", guarded(lambda path, c=cls: _json(load(ACRONET / f"list_{c}.json"))))
        data = ACRONET / f"data_{cls}_{ACRONET_DAY}.json"

        def data_reply(path: str, d: Path = data) -> Reply:
            q = _query(path)
            if empty or not q.get("from", "").startswith(ACRONET_DAY):
                return _json([])
            return _json(load(d))

        server.route(f"/app/sensors/data/{cls}/all", guarded(data_reply))
    return gate


def keycloak_sequence(server: LocalServer, *replies: Reply) -> None:
    """Answer the token endpoint with ``replies`` in order (the last repeats)."""
    server.route(KEYCLOAK_PATH, *replies)


def form(body: bytes) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(body.decode()).items()}
