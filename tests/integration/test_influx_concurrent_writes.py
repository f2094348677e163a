"""InfluxClient.write_bodies: several requests in flight, every point stored once, errors raised."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ionbeam_dagster.errors import IonbeamError
from ionbeam_dagster.influx import InfluxClient

pytestmark = pytest.mark.services

T0 = 1_704_067_200 * 10**9


def _bodies(count: int, lines: int) -> list[bytes]:
    return [
        "".join(f"m,station=s{i % 5} f={b * lines + i} {T0 + (b * lines + i) * 10**9}\n" for i in range(lines)).encode()
        for b in range(count)
    ]


@pytest.mark.parametrize("writers", [1, 2, 4])
def test_every_body_is_written(influx_url: str, influx_database: str, writers: int) -> None:
    with InfluxClient(influx_url, influx_database) as client:
        assert client.write_bodies(_bodies(9, 50), writers=writers) == 9
        assert client.count("m", T0, T0 + 10**12) == 450


def test_the_producer_is_pulled_only_as_writers_free_up(influx_url: str, influx_database: str) -> None:
    produced: list[int] = []

    def bodies() -> Iterator[bytes]:
        for i, body in enumerate(_bodies(6, 10)):
            produced.append(i)
            yield body

    with InfluxClient(influx_url, influx_database) as client:
        assert client.write_bodies(bodies(), writers=2) == 6
    assert produced == list(range(6))


def test_a_refused_body_is_raised_and_stops_the_rest(influx_url: str, influx_database: str) -> None:
    pulled = 0

    def bodies() -> Iterator[bytes]:
        nonlocal pulled
        good = _bodies(50, 10)
        for i in range(50):
            pulled += 1
            yield b"m f=oops\"unterminated 1\n" if i == 1 else good[i]

    with InfluxClient(influx_url, influx_database) as client:
        with pytest.raises(IonbeamError, match="refused a write"):
            client.write_bodies(bodies(), writers=2)
    # Bounded read-ahead: the failure stops the producer long before its end.
    assert pulled < 10


def test_writers_must_be_positive(influx_url: str, influx_database: str) -> None:
    with InfluxClient(influx_url, influx_database) as client, pytest.raises(ValueError, match="writers"):
        client.write_bodies([], writers=0)
