"""``/v1/webhooks``: an owner's webhook endpoints, their secrets and their delivery history.

Scopes: ``webhooks:read`` to see endpoints and deliveries, ``webhooks:write`` to register,
delete, rotate and redeliver (``admin`` holds both). Registering an endpoint for ``import.*``
(``export.*``) events also needs ``imports:read`` (``exports:read``): a token may not subscribe
to news of jobs it could not read. An endpoint is its owner's: another owner's token gets 404
(an admin token sees every owner's; its listing shows its own, or ``owner=``'s).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, delete, get, post
from litestar.openapi import ResponseSpec
from litestar.params import Parameter

from api import job_query
from api.auth import authorize, principal_of
from api.problems import GUARDED, PROBLEM, Problem, ProblemDetails, problem_responses
from api.schemas import (
    AttemptList,
    AttemptView,
    DeliveryList,
    DeliveryView,
    WebhookCreate,
    WebhookList,
    WebhookView,
    WebhookWithSecret,
)
from api.state import AppState
from engine import netguard, webhooks
from engine.auth import Principal
from engine.job_list import Position
from engine.webhooks import Delivery, Endpoint

READ, WRITE = "webhooks:read", "webhooks:write"


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _path(endpoint_id: str) -> str:
    return f"/v1/webhooks/{endpoint_id}"


def endpoint_view(app: AppState, e: Endpoint) -> WebhookView:
    return WebhookView(
        id=e.id,
        owner=e.owner,
        url=e.url,
        event_types=e.event_types,
        description=e.description,
        enabled=e.enabled,
        disabled_reason=e.disabled_reason,
        created=_iso(e.created_at) or "",
        updated=_iso(e.updated_at) or "",
        previous_secret_expires=_iso(e.previous_expires),
        deliveries_url=f"{app.settings.public_url}{_path(e.id)}/deliveries",
    )


def _with_secret(view: WebhookView, secret: str) -> WebhookWithSecret:
    fields = {f: getattr(view, f) for f in view.__struct_fields__}
    return WebhookWithSecret(**fields, secret=secret)


def delivery_view(d: Delivery) -> DeliveryView:
    return DeliveryView(
        id=d.id,
        event_type=d.event_type,
        job_id=d.job_id,
        state=d.state,  # type: ignore[arg-type]
        attempt_count=d.attempt_count,
        next_attempt=_iso(d.next_attempt_at),
        last_status=d.last_status,
        last_error=d.last_error,
        event_time=_iso(d.event_at) or "",
        created=_iso(d.created_at) or "",
        finished=_iso(d.finished_at),
        attempts=[
            AttemptView(a.n, _iso(a.started_at) or "", a.duration_ms, a.status_code, a.error)
            for a in d.attempts
        ],
    )


def _endpoint(app: AppState, principal: Principal, endpoint_id: str) -> Endpoint:
    found = app.sync(webhooks.get_endpoint, endpoint_id, principal.owner_filter())
    if found is None:
        raise Problem(404, f"no webhook {endpoint_id}")
    return found


def _kinds_readable(principal: Principal, event_types: Sequence[str]) -> None:
    for kind in dict.fromkeys(t.split(".")[0] for t in event_types):
        scope = f"{kind}s:read"
        if kind in ("import", "export") and not principal.allows(scope):
            raise Problem(403, f"this token lacks the '{scope}' scope needed for {kind}.* events")


def _policy(app: AppState) -> netguard.Policy:
    return netguard.Policy(app.settings.webhook_allow_private)


def _problem(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=ProblemDetails,
        media_type=PROBLEM,
        description=description,
        generate_examples=False,
    )


_NOT_FOUND = _problem("No such webhook (or delivery) for this token.")
_CONFLICT = _problem(
    "Registering: the owner has as many endpoints as allowed. Redelivering: the delivery is "
    "still pending, or the endpoint is disabled."
)


def _page_limit(what: str) -> Any:
    """The ``limit`` query parameter of a paged history route."""
    return Parameter(
        default=None,
        description=f"{what} per page.",
        schema_extra={
            "one_of": None,
            "type": "integer",
            "minimum": 1,
            "maximum": webhooks.PAGE_MAX,
            "default": webhooks.PAGE_DEFAULT,
        },
    )


class WebhookController(Controller):
    path = "/v1/webhooks"
    tags = ["webhooks"]
    guards = [authorize]

    @post(
        "/",
        status_code=201,
        sync_to_thread=True,
        opt={"scope": WRITE},
        summary="Register a webhook endpoint; its signing secret is shown once",
        description=(
            "`url`: where each event is POSTed: `https`, resolving only to public addresses "
            "(loopback, private, link-local, CGNAT, multicast and reserved ranges are refused "
            "with 400 and a `reason`; BULKIO_WEBHOOK_ALLOW_PRIVATE lifts this for loopback and "
            "private ones, and allows `http`, for development). `event_types`: any of "
            f"{', '.join(f'`{t}`' for t in webhooks.EVENT_TYPES)}. The answer holds `secret` "
            "(`whsec_…`), which signs every delivery (Standard Webhooks: `webhook-id`, "
            "`webhook-timestamp`, `webhook-signature`); it is not shown again. At most "
            f"{webhooks.MAX_ENDPOINTS} endpoints per owner."
        ),
        responses={**problem_responses(*GUARDED), 409: _CONFLICT},
    )
    def create(
        self, request: Request[Any, Any, Any], app: AppState, data: WebhookCreate
    ) -> Response[WebhookWithSecret]:
        principal = principal_of(request)
        _kinds_readable(principal, data.event_types)
        try:
            endpoint, secret = app.sync(
                webhooks.create_endpoint,
                principal.owner,
                data.url,
                data.event_types,
                data.description,
                _policy(app),
            )
        except webhooks.EndpointRefused as exc:
            if exc.code == "too_many":
                raise Problem(409, str(exc)) from None
            if exc.reason:
                raise Problem(400, str(exc), reason=exc.reason) from None
            raise Problem(400, str(exc)) from None
        body = _with_secret(endpoint_view(app, endpoint), secret)
        return Response(body, status_code=201, headers={"Location": _path(endpoint.id)})

    @get(
        "/",
        sync_to_thread=True,
        opt={"scope": READ},
        summary="The token owner's webhook endpoints, oldest first",
        responses=problem_responses(*GUARDED),
    )
    def list_endpoints(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        owner: str | None = Parameter(
            default=None,
            description="Admin tokens: this owner's endpoints instead of their own.",
            schema_extra={"one_of": None, "type": "string", "pattern": r"^[^\x00]*$"},
        ),
    ) -> WebhookList:
        _only(request, ("owner",))
        principal = principal_of(request)
        if owner is not None and "\x00" in owner:
            raise Problem(400, "owner must not contain NUL characters")
        if owner is not None and owner != principal.owner and not principal.admin:
            raise Problem(403, "only an admin token may list the webhooks of another owner")
        found = app.sync(webhooks.list_endpoints, owner or principal.owner)
        return WebhookList(webhooks=[endpoint_view(app, e) for e in found])

    @get(
        "/{webhook_id:str}",
        sync_to_thread=True,
        opt={"scope": READ},
        summary="One webhook endpoint (without its secret)",
        responses={**problem_responses(*GUARDED), 404: _NOT_FOUND},
    )
    def show(self, request: Request[Any, Any, Any], app: AppState, webhook_id: str) -> WebhookView:
        return endpoint_view(app, _endpoint(app, principal_of(request), webhook_id))

    @delete(
        "/{webhook_id:str}",
        sync_to_thread=True,
        opt={"scope": WRITE},
        summary="Delete a webhook endpoint with its delivery history",
        responses={**problem_responses(*GUARDED), 404: _NOT_FOUND},
    )
    def remove(self, request: Request[Any, Any, Any], app: AppState, webhook_id: str) -> None:
        owner = principal_of(request).owner_filter()
        if not app.sync(webhooks.delete_endpoint, webhook_id, owner):
            raise Problem(404, f"no webhook {webhook_id}")

    @post(
        "/{webhook_id:str}/rotate-secret",
        status_code=200,
        sync_to_thread=True,
        opt={"scope": WRITE},
        summary="A new signing secret (shown once); the old one still signs for a while",
        description=(
            "Deliveries carry two signatures (`webhook-signature: v1,<new> v1,<old>`) until "
            "`previous_secret_expires` (BULKIO_WEBHOOK_ROTATION_SECONDS, 24 h by default), so "
            "the receiver can switch to the new secret without missing a message. Rotating "
            "again ends the window of the secret rotated out before."
        ),
        responses={**problem_responses(*GUARDED), 404: _NOT_FOUND},
    )
    def rotate(
        self, request: Request[Any, Any, Any], app: AppState, webhook_id: str
    ) -> WebhookWithSecret:
        owner = principal_of(request).owner_filter()
        window = app.settings.webhook_rotation_seconds
        rotated = app.sync(webhooks.rotate_secret, webhook_id, owner, window)
        if rotated is None:
            raise Problem(404, f"no webhook {webhook_id}")
        endpoint, secret = rotated
        return _with_secret(endpoint_view(app, endpoint), secret)

    @get(
        "/{webhook_id:str}/deliveries",
        sync_to_thread=True,
        opt={"scope": READ},
        summary="The endpoint's deliveries, newest first, each with its attempts",
        description=(
            "Each delivery is one message (`id` is its `webhook-id`) with its state "
            "(`pending`, `delivered`, `failed`) and its newest attempts (`status_code`, "
            "`duration_ms`, `error`; `attempt_count` says how many there are, and "
            "`…/deliveries/{delivery_id}/attempts` pages through every one). `next` is the next "
            "page."
        ),
        responses={**problem_responses(*GUARDED), 404: _NOT_FOUND},
    )
    def deliveries(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        webhook_id: str,
        cursor: str | None = Parameter(
            default=None,
            description="Where the previous page ended (its `next_cursor`); opaque.",
            schema_extra={"one_of": None, "type": "string", "pattern": job_query.CURSOR_PATTERN},
        ),
        limit: str | None = _page_limit("Deliveries"),
    ) -> DeliveryList:
        _only(request, ("cursor", "limit"))
        endpoint = _endpoint(app, principal_of(request), webhook_id)
        size = _limit(limit)
        after = None
        if cursor is not None:
            position = job_query.decode_cursor(cursor)
            after = (position.created_at, "msg_" + position.id.hex)
        found, last = app.sync(webhooks.list_deliveries, endpoint.id, after, size)
        next_cursor = next_link = None
        if last is not None:
            next_cursor = job_query.encode_cursor(Position(last[0], uuid.UUID(hex=last[1][4:])))
            query = urlencode({"cursor": next_cursor, "limit": size})
            next_link = f"{app.settings.public_url}{_path(endpoint.id)}/deliveries?{query}"
        return DeliveryList([delivery_view(d) for d in found], next_cursor, next_link)

    @get(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/attempts",
        sync_to_thread=True,
        opt={"scope": READ},
        summary="Every attempt of one delivery, oldest first",
        description=(
            "Each attempt's number, start time, `status_code`, `duration_ms` and `error`, "
            "redeliveries included. `next` is the next page."
        ),
        responses={**problem_responses(*GUARDED), 404: _NOT_FOUND},
    )
    def attempts(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        webhook_id: str,
        delivery_id: str,
        after: str | None = Parameter(
            default=None,
            description="Attempts after this attempt number (its page's `next_after`).",
            schema_extra={"one_of": None, "type": "integer", "minimum": 0, "default": 0},
        ),
        limit: str | None = _page_limit("Attempts"),
    ) -> AttemptList:
        _only(request, ("after", "limit"))
        endpoint = _endpoint(app, principal_of(request), webhook_id)
        size = _limit(limit)
        text = (after or "0").strip()
        if not (text.isascii() and text.isdigit() and len(text) < 10):
            raise Problem(400, f"after must be a whole number of at least 0; got {after!r}")
        found = app.sync(webhooks.list_attempts, endpoint.id, delivery_id, int(text), size)
        if found is None:
            raise Problem(404, f"no delivery {delivery_id} of webhook {webhook_id}")
        page = found[:size]
        next_after = next_link = None
        if len(found) > size:
            next_after = page[-1].n
            query = urlencode({"after": next_after, "limit": size})
            next_link = (
                f"{app.settings.public_url}{_path(endpoint.id)}/deliveries/{delivery_id}"
                f"/attempts?{query}"
            )
        views = [
            AttemptView(a.n, _iso(a.started_at) or "", a.duration_ms, a.status_code, a.error)
            for a in page
        ]
        return AttemptList(views, next_after, next_link)

    @post(
        "/{webhook_id:str}/deliveries/{delivery_id:str}/redeliver",
        status_code=202,
        sync_to_thread=True,
        opt={"scope": WRITE},
        summary="Send a delivered or failed message again (same webhook-id)",
        description=(
            "The delivery becomes `pending` at once with a fresh retry schedule; its history "
            "keeps the earlier attempts. 409 while it is still pending or when the endpoint "
            "is disabled."
        ),
        responses={**problem_responses(*GUARDED), 404: _NOT_FOUND, 409: _CONFLICT},
    )
    def redeliver(
        self,
        request: Request[Any, Any, Any],
        app: AppState,
        webhook_id: str,
        delivery_id: str,
    ) -> DeliveryView:
        endpoint = _endpoint(app, principal_of(request), webhook_id)
        try:
            done = app.sync(webhooks.redeliver, endpoint.id, delivery_id)
        except webhooks.NotRedeliverable as exc:
            raise Problem(409, str(exc)) from None
        if not done:
            raise Problem(404, f"no delivery {delivery_id} of webhook {webhook_id}")
        found = app.sync(webhooks.get_delivery, endpoint.id, delivery_id)
        assert found is not None
        return delivery_view(found)


def _only(request: Request[Any, Any, Any], known: tuple[str, ...]) -> None:
    """400 for a query parameter the route does not know (a misspelt one must not be ignored)."""
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        takes = ", ".join(known) if known else "none"
        raise Problem(400, f"unknown query parameter {unknown[0]!r}; this route takes {takes}")


def _limit(raw: str | None) -> int:
    if raw is None or raw.strip() == "":
        return webhooks.PAGE_DEFAULT
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= webhooks.PAGE_MAX):
        raise Problem(
            400, f"limit must be a whole number from 1 to {webhooks.PAGE_MAX}; got {raw!r}"
        )
    return int(text)
