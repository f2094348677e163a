"""Errors the platform distinguishes, because each one is handled differently.

A :class:`Rejection` is final: the input is bad and goes to the dead-letter queue with its
code and sentence. A :class:`TransientError` is a service that did not answer; the work is
retried with backoff and nothing is dead-lettered.
"""

from __future__ import annotations

REJECTION_CODES = frozenset(
    {
        "malformed_json",
        "invalid_message",
        "unsupported_version",
        "invalid_time_range",
        "unknown_dataset",
        "dataset_mismatch",
        "invalid_payload_location",
        "message_too_large",
        "payload_not_found",
        "payload_unreadable",
        "missing_column",
        # StartSourceCommand (source sensor): sent to another source's queue; a range the
        # source cannot serve (a live feed asked for the past); a run that kept failing.
        "source_mismatch",
        "range_not_available",
        "fetch_failed",
    }
)


class IonbeamError(Exception):
    """Base of every error this package raises on purpose."""


class Rejection(IonbeamError):
    """Input that can never succeed; it is dead-lettered with ``code`` and ``message``.

    ``message`` is one sentence that names the field and the problem, because the operator
    reading the dead-letter queue has nothing else to go on.
    """

    def __init__(self, code: str, message: str) -> None:
        if code not in REJECTION_CODES:
            raise ValueError(f"unknown rejection code {code!r}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransientError(IonbeamError):
    """A service (InfluxDB, Redis, RabbitMQ, object store) did not answer; retry later."""


class CatalogError(IonbeamError):
    """The dataset catalog is invalid; the message names the entry and the field."""
