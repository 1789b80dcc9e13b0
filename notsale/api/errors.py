"""The one place that turns failures into the contract's {"error", "detail"} bodies."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
from litestar.openapi import ResponseSpec
from litestar.types import Receive, Scope, Send

from notsale import metrics
from notsale.api.models import ErrorBody
from notsale.connections import REDIS_DOWN
from notsale.errors import DEFAULT_DETAIL, STATUS, ErrorCode, NotsaleError
from notsale.store.pool import PG_DOWN

log = logging.getLogger(__name__)


def error_response(code: ErrorCode, detail: str | None = None) -> Response[Any]:
    return Response(
        ErrorBody(code.value, detail or DEFAULT_DETAIL[code]),
        status_code=STATUS[code],
        media_type="application/json",
    )


def on_notsale_error(_: Request[Any, Any, Any], exc: NotsaleError) -> Response[ErrorBody]:
    response = error_response(exc.code, exc.detail)
    if exc.retry_after_s is not None:
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


def on_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    """Litestar's own refusals (no route, wrong method, unreadable request) in our words."""
    if isinstance(exc, NotFoundException):
        return error_response(ErrorCode.NOT_FOUND)
    if isinstance(exc, MethodNotAllowedException):
        response = error_response(ErrorCode.METHOD_NOT_ALLOWED)
        if exc.headers:
            response.headers.update(exc.headers)  # keeps Allow
        return response
    if exc.status_code >= 500:
        log.error("server error", extra={"error": repr(exc)})
        return Response(
            ErrorBody("internal", "The server failed; the failure was logged."),
            status_code=exc.status_code,
        )
    return error_response(ErrorCode.INVALID_REQUEST, str(exc.detail) or None)


def on_store_down(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.warning("store unreachable", extra={"error": repr(exc)})
    return error_response(ErrorCode.UNAVAILABLE)


def on_unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error", exc_info=exc)
    return Response(
        ErrorBody("internal", "The server failed; the failure was logged."), status_code=500
    )


def recorded(
    handler: Callable[[Request[Any, Any, Any], Any], Response[ErrorBody]],
) -> Callable[[Request[Any, Any, Any], Any], Response[ErrorBody]]:
    """The handler, recording its answers to the hot routes (see metrics.hot_answer)."""

    def handle(request: Request[Any, Any, Any], exc: Any) -> Response[ErrorBody]:
        response = handler(request, exc)
        status = response.status_code or 500
        metrics.hot_answer(request.scope, status, response.content.error)
        return response

    return handle


EXCEPTION_HANDLERS = {
    NotsaleError: recorded(on_notsale_error),
    HTTPException: recorded(on_http_exception),
    **{exc: recorded(on_store_down) for exc in (*REDIS_DOWN, *PG_DOWN)},
    Exception: recorded(on_unexpected),
}


async def answer_exception(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """Answer what a handler run outside Litestar's router raised (api/hot.py, `straight`),
    as Litestar's exception middleware would with EXCEPTION_HANDLERS."""
    handler = next(EXCEPTION_HANDLERS[c] for c in type(exc).__mro__ if c in EXCEPTION_HANDLERS)
    request: Request[Any, Any, Any] = Request(scope, receive, send)
    await handler(request, exc).to_asgi_response(None, request)(scope, receive, send)


def error_groups(*codes: ErrorCode, parameters: bool = True, stores: bool = True) -> dict[int, str]:
    """The error codes a route can answer (plus invalid_request unless the route reads no
    `parameters`, and unavailable unless it answers without the `stores`), as one
    description per status, for the OpenAPI document."""
    by_status: dict[int, list[ErrorCode]] = {}
    always = (ErrorCode.INVALID_REQUEST,) if parameters else ()
    down = (ErrorCode.UNAVAILABLE,) if stores else ()
    for code in (*codes, *always, *down):
        if code not in by_status.setdefault(STATUS[code], []):
            by_status[STATUS[code]].append(code)
    return {
        status: "; ".join(f"`{c.value}`: {DEFAULT_DETAIL[c].rstrip('.')}" for c in group)
        for status, group in sorted(by_status.items())
    }


def error_responses(
    *codes: ErrorCode, parameters: bool = True, stores: bool = True
) -> dict[int, ResponseSpec]:
    """A Litestar route handler's `responses` for the error codes it can answer."""
    return {
        status: ResponseSpec(data_container=ErrorBody, generate_examples=False, description=text)
        for status, text in error_groups(*codes, parameters=parameters, stores=stores).items()
    }
