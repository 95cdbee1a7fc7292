"""Test helpers for Stripe billing, importable by projects that use the app.

:class:`FakeStripe` is a local HTTP server that imitates ``POST /v1/billing/meter_events``:
point the real ``stripe`` SDK at it (``USAGE_LIMITS["BILLING"]["API_BASE"] = fake.url``) and it
records every request, deduplicates identifiers as Stripe does, and fails on demand::

    with FakeStripe(failure_rate=0.3, seed=1) as fake, override_settings(...):
        report_pending()
    assert set(fake.stored) == expected_identifiers

:func:`sign_webhook` makes the ``Stripe-Signature`` header Stripe would send with a payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

METER_EVENTS_PATH = "/v1/billing/meter_events"


@dataclass(frozen=True)
class MeterEventRequest:
    """One request the fake received, and what it answered."""

    identifier: str
    event_name: str
    customer_id: str
    value: str
    timestamp: int | None
    status: int
    stored: bool  # whether this request added the event to what Stripe would bill


class FakeStripe:
    """A stand-in for Stripe's meter events endpoint on 127.0.0.1, in a background thread.

    ``failure_rate``: share of requests answered with one of ``failure_statuses`` at random.
    ``lost_response_rate``: share of those failures that happen *after* Stripe stored the event
    (the answer is lost on the way back: the case identifiers exist for).
    ``duplicates``: ``"accept"`` answers a known identifier with 200 and the original event,
    ``"reject"`` answers 400 ``resource_already_exists``; neither stores it twice.
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.0,
        failure_statuses: tuple[int, ...] = (500, 429),
        lost_response_rate: float = 0.0,
        duplicates: str = "accept",
        api_key: str | None = None,
        seed: int | None = None,
        latency: float = 0.0,
    ) -> None:
        self.failure_rate = failure_rate
        self.failure_statuses = failure_statuses
        self.lost_response_rate = lost_response_rate
        self.duplicates = duplicates
        self.api_key = api_key
        self.latency = latency
        self.random = random.Random(seed)
        self.requests: list[MeterEventRequest] = []
        self.stored: dict[str, MeterEventRequest] = {}
        self.scripted: list[int] = []  # statuses to answer next, before any random failure
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakeStripe:
        self.thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer_next(self, *statuses: int) -> None:
        """Answer the next requests with these statuses (200 means: process normally)."""
        with self.lock:
            self.scripted.extend(statuses)

    def successes(self) -> Counter[str]:
        """How many times each identifier was answered 200."""
        return Counter(r.identifier for r in self.requests if r.status == 200)

    def sent_identifiers(self) -> Counter[str]:
        """How many requests carried each identifier, whatever the answer."""
        return Counter(r.identifier for r in self.requests)

    # --- the endpoint --------------------------------------------------------------------------

    def _respond(self, headers: Any, body: str) -> tuple[int, dict[str, Any]]:
        if self.latency:
            time.sleep(self.latency)
        if self.api_key is not None and headers.get("Authorization") != f"Bearer {self.api_key}":
            return 401, _error("invalid_request_error", "Invalid API Key provided.")
        form = {k: v[0] for k, v in parse_qs(body).items()}
        identifier = form.get("identifier", "")
        timestamp = int(form["timestamp"]) if "timestamp" in form else None
        with self.lock:
            status = self.scripted.pop(0) if self.scripted else 200
            if status == 200 and self.random.random() < self.failure_rate:
                status = self.random.choice(self.failure_statuses)
            lost = status >= 500 and self.random.random() < self.lost_response_rate
            duplicate = identifier in self.stored
            stored = (status == 200 or lost) and not duplicate
            if status == 200 and duplicate and self.duplicates == "reject":
                status = 400
            request = MeterEventRequest(
                identifier=identifier,
                event_name=form.get("event_name", ""),
                customer_id=form.get("payload[stripe_customer_id]", ""),
                value=form.get("payload[value]", ""),
                timestamp=timestamp,
                status=status,
                stored=stored,
            )
            self.requests.append(request)
            if stored:
                self.stored[identifier] = request
            original = self.stored.get(identifier, request)
        if status == 200:
            return 200, {
                "object": "billing.meter_event",
                "created": int(time.time()),
                "event_name": original.event_name,
                "identifier": identifier,
                "livemode": False,
                "payload": {
                    "stripe_customer_id": original.customer_id,
                    "value": original.value,
                },
                "timestamp": original.timestamp,
            }
        if status == 400 and duplicate:
            return 400, _error(
                "invalid_request_error",
                f"An event with identifier {identifier} already exists.",
                code="resource_already_exists",
                param="identifier",
            )
        if status == 429:
            return 429, _error("invalid_request_error", "Too many requests.", code="rate_limit")
        return status, _error("api_error", "Something went wrong on Stripe's end.")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                if self.path != METER_EVENTS_PATH:
                    status, payload = 404, _error("invalid_request_error", "Unrecognized URL.")
                else:
                    status, payload = fake._respond(self.headers, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


def _error(kind: str, message: str, *, code: str = "", param: str = "") -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return {"error": error}


def sign_webhook(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``payload``: HMAC-SHA256 of ``"{t}.{payload}"``."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    t = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{t}.{text}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={signature}"


def stripe_event(
    type: str,
    data_object: dict[str, Any],
    *,
    event_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A Stripe event envelope as webhooks deliver it."""
    return {
        "id": event_id or f"evt_{random.getrandbits(64):016x}",
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()) if created is None else created,
        "livemode": False,
        "type": type,
        "data": {"object": data_object},
    }
