"""A local Stripe for the Stripe probe tests: localstripe (PyPI), plus the little it lacks.

Run as a subprocess by the `stripe_peer` fixture (see tests/diagnostics/test_probes_stripe.py):

    python tests/diagnostics/stripe_peer.py --port 12345

It listens on 127.0.0.1 only (localstripe's own `start()` binds every interface) and
keeps its store in memory (localstripe pickles it to a shared /tmp file by default).

What is added to localstripe, answering as Stripe's API does (same paths, same JSON):

- Webhook deliveries are recorded per event, so that `GET /v1/events` understands
  `delivery_success=true|false` (Stripe: false = some endpoint has not had it delivered,
  failed or still pending) and each event carries `pending_webhooks`. localstripe
  sends each event to the endpoints registered with `POST /_config/webhooks/{id}`
  (url, secret), signed as Stripe signs; here without its one-second delay.
- Lists come newest first, as Stripe's do (localstripe keeps insertion order).
- `GET /v1/payment_intents` accepts `created[gt|gte|lt|lte]`.

And for the tests only, under /_config/ (no API key needed, as localstripe's own):

- `POST /_config/backdate/{event|payment_intent}/{id}` with `seconds`: move `created`
  back (localstripe cannot make an object in the past; the probes look at age).
- `GET /_config/requests`: every API request received since the last
  `DELETE /_config/data` (which also empties the store): method, path, query,
  whether an API key came and which, the Stripe-Version header.
- `GET /_config/deliveries`: {event id: {"type", "delivered", "failed", "pending"}}.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web
from localstripe import resources, server, webhooks

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

REQUESTS: list[dict[str, Any]] = []
DELIVERIES: dict[str, dict[str, Any]] = {}


def _api_key(request: web.Request) -> str | None:
    kind, _, value = request.headers.get("Authorization", "").partition(" ")
    if kind == "Bearer":
        return value
    if kind == "Basic":
        return base64.b64decode(value).decode().split(":")[0]
    return None


@web.middleware
async def record_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/v1/"):
        body = await request.text() if request.can_read_body else ""
        REQUESTS.append(
            {
                "method": request.method,
                "path": request.path,
                "query": dict(request.query),
                "body": body,
                "api_key": _api_key(request),
                "stripe_version": request.headers.get("Stripe-Version"),
                "user_agent": request.headers.get("User-Agent"),
            }
        )
    return await handler(request)


def _delivery_state(event_id: str) -> dict[str, Any]:
    return DELIVERIES.get(event_id, {"delivered": 0, "failed": 0, "pending": 0})


def _export_event(event: Any) -> dict[str, Any]:
    data = event._export()
    state = _delivery_state(event.id)
    data["pending_webhooks"] = state["pending"] + state["failed"]
    data.setdefault("request", {"id": None, "idempotency_key": None})
    return data


def _created_filters(created: Any) -> list[Callable[[Any], bool]]:
    """Stripe's `created` filter: a timestamp or {gt, gte, lt, lte}."""
    if isinstance(created, str):
        return [lambda obj: obj.created == int(created)]
    if not isinstance(created, dict) or not set(created) <= {"gt", "gte", "lt", "lte"}:
        raise server.UserError(400, "Invalid created: must be a timestamp or a range")
    tests = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
    }
    filters = []
    for op, value in created.items():
        try:
            bound = int(value)
        except ValueError:
            raise server.UserError(400, f"Invalid integer: {value}") from None
        filters.append(lambda obj, op=op, bound=bound: tests[op](obj.created, bound))
    return filters


def _list_response(request: web.Request, items: list[Any], export: Callable) -> web.Response:
    query = server.unflatten_data(request.query)
    limit = int(query.get("limit", 10))
    if not 1 <= limit <= 100:
        raise server.UserError(400, "Invalid limit: must be between 1 and 100")
    # Newest first; for equal seconds, the later created first (the store keeps order).
    items = sorted(reversed(items), key=lambda obj: obj.created, reverse=True)
    start = 0
    if after := query.get("starting_after"):
        ids = [obj.id for obj in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    page = items[start : start + limit]
    return server.json_response(
        {
            "object": "list",
            "url": request.path,
            "has_more": len(items) > start + limit,
            "data": [export(obj) for obj in page],
        }
    )


def _stored(kind: str) -> list[Any]:
    return [obj for key, obj in resources.store.items() if key.startswith(kind + ":")]


async def list_events(request: web.Request) -> web.Response:
    query = server.unflatten_data(request.query)
    unknown = set(query) - {"limit", "starting_after", "created", "type", "delivery_success"}
    if unknown:
        raise server.UserError(400, f"Received unknown parameter: {sorted(unknown)[0]}")
    filters = _created_filters(query["created"]) if "created" in query else []
    if "type" in query:
        filters.append(lambda obj: obj.type == query["type"])
    if "delivery_success" in query:
        wanted = query["delivery_success"]
        if wanted not in ("true", "false"):
            raise server.UserError(400, f"Invalid boolean: {wanted}")

        def delivered_to_all(obj: Any) -> bool:
            state = _delivery_state(obj.id)
            return state["failed"] == 0 and state["pending"] == 0

        want = wanted == "true"
        filters.append(lambda obj: delivered_to_all(obj) is want)
    items = [obj for obj in _stored("event") if all(f(obj) for f in filters)]
    return _list_response(request, items, _export_event)


async def retrieve_event(request: web.Request) -> web.Response:
    event = resources.Event._api_retrieve(request["ours"]["id"])
    return server.json_response(_export_event(event))


async def list_payment_intents(request: web.Request) -> web.Response:
    query = server.unflatten_data(request.query)
    unknown = set(query) - {"limit", "starting_after", "created", "customer"}
    if unknown:
        raise server.UserError(400, f"Received unknown parameter: {sorted(unknown)[0]}")
    filters = _created_filters(query["created"]) if "created" in query else []
    if "customer" in query:
        filters.append(lambda obj: obj.customer == query["customer"])
    items = [obj for obj in _stored("payment_intent") if all(f(obj) for f in filters)]
    return _list_response(request, items, lambda obj: obj._export())


async def backdate(request: web.Request) -> web.Response:
    kind, object_id = request["ours"]["kind"], request["ours"]["id"]
    seconds = int((await request.post())["seconds"])
    obj = resources.store.get(f"{kind}:{object_id}")
    if obj is None:
        raise server.UserError(404, "Not Found")
    obj.created -= seconds
    return server.json_response({"id": object_id, "created": obj.created})


async def show_requests(request: web.Request) -> web.Response:
    return server.json_response(REQUESTS)


async def show_deliveries(request: web.Request) -> web.Response:
    return server.json_response(DELIVERIES)


async def flush(request: web.Request) -> web.Response:
    resources.store.clear()
    REQUESTS.clear()
    DELIVERIES.clear()
    return web.Response()


async def send_webhook(event: Any) -> None:
    """localstripe's delivery (same payload and signature), recording each outcome."""
    payload = json.dumps(_export_event(event), indent=2, sort_keys=True).encode()
    endpoints = [
        hook
        for hook in webhooks._webhooks.values()
        if hook.events is None or event.type in hook.events
    ]
    state = DELIVERIES.setdefault(
        event.id, {"type": event.type, "delivered": 0, "failed": 0, "pending": 0}
    )
    state["pending"] += len(endpoints)
    async with ClientSession(timeout=ClientTimeout(total=5)) as session:
        for hook in endpoints:
            timestamp = int(time.time())
            signature = hmac.new(
                hook.secret.encode(), b"%d.%s" % (timestamp, payload), hashlib.sha256
            ).hexdigest()
            headers = {
                "Content-Type": "application/json; charset=utf-8",
                "Stripe-Signature": f"t={timestamp},v1={signature}",
            }
            try:
                async with session.post(hook.url, data=payload, headers=headers) as response:
                    ok = 200 <= response.status < 300
            except (ClientError, TimeoutError):
                ok = False
            state["pending"] -= 1
            state["delivered" if ok else "failed"] += 1


ROUTES: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(r"/v1/events"), list_events),
    ("GET", re.compile(r"/v1/events/(?P<id>[^/]+)"), retrieve_event),
    ("GET", re.compile(r"/v1/payment_intents"), list_payment_intents),
    ("POST", re.compile(r"/_config/backdate/(?P<kind>\w+)/(?P<id>[^/]+)"), backdate),
    ("GET", re.compile(r"/_config/requests"), show_requests),
    ("GET", re.compile(r"/_config/deliveries"), show_deliveries),
    ("DELETE", re.compile(r"/_config/data"), flush),
]


@web.middleware
async def ours_first(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Our routes before localstripe's (innermost: after its auth and error handling)."""
    for method, pattern, ours in ROUTES:
        if request.method == method and (match := pattern.fullmatch(request.path)):
            request["ours"] = match.groupdict()
            return await ours(request)
    return await handler(request)


def build_app() -> web.Application:
    # Keep the store in this process: never read or write localstripe's shared pickle.
    resources.Store.dump_to_disk = lambda self: None
    webhooks._send_webhook = send_webhook
    app = server.app
    app.middlewares.insert(0, record_requests)
    app.middlewares.append(ours_first)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
