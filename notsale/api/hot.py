"""Answering below Litestar's request and response machinery, for the hot routes.

POST /checkout and POST /purchase read the query and write the answer themselves: Litestar's
parameter parsing, dependency injection and response building cost more than the rest of a
checkout together (bench/RESULTS.md). A POST to either path does not even go through
Litestar's router and middleware (`straight`): what the handler raises is answered by the
same exception handlers (notsale.api.errors). They are Litestar `asgi` route handlers too, for
their OpenAPI entries (their HotRouteDoc, notsale.api.openapi), for the other methods (405)
and for paths Litestar normalizes (a trailing slash). A GET of an items page, which anyone
may ask for as often as a checkout, goes straight to its handler too (`GetRoute`).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

import msgspec
from litestar import Request
from litestar.datastructures import MultiDict
from litestar.exceptions import MethodNotAllowedException
from litestar.types import ASGIApp, HTTPScope, Message, Receive, Scope, Send

from notsale import metrics
from notsale.api.errors import answer_exception
from notsale.api.models import Body, ErrorBody
from notsale.errors import DEFAULT_DETAIL, STATUS, ErrorCode, NotsaleError

ENCODER = msgspec.json.Encoder()
# Refusals are most of a stampede's answers: encoded once.
REFUSALS = {c: ENCODER.encode(ErrorBody(c.value, DEFAULT_DETAIL[c])) for c in ErrorCode}


# On every answer: a browser never second-guesses a content type (send_json has it too).
NOSNIFF = (b"x-content-type-options", b"nosniff")


def nosniff(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), NOSNIFF]
        await send(message)

    return sending


class GetRoute(NamedTuple):
    """A GET route answered straight: paths that match `path`, named `template` in metrics."""

    path: re.Pattern[str]
    template: str
    handler: ASGIApp


def straight(app: ASGIApp, posts: Mapping[str, ASGIApp], gets: Sequence[GetRoute] = ()) -> ASGIApp:
    """`app` (Litestar's router and middleware), except that a POST to one of the `posts` or
    a GET of one of the `gets` goes straight to its handler. Measured (bench/RESULTS.md): a
    checkout's own CPU 31 -> 13 µs. Every answer gets NOSNIFF (the straight ones carry it)."""

    async def handle(scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method")
        route = posts.get(scope["path"]) if method == "POST" else None
        if method == "GET":
            for get in gets:
                if get.path.fullmatch(scope["path"]):
                    scope["path_template"] = get.template
                    route = get.handler
                    break
        if route is None:
            await app(scope, receive, nosniff(send))
            return
        try:
            await route(scope, receive, send)
        except Exception as exc:
            await answer_exception(scope, receive, nosniff(send), exc)

    return handle


def query_of(scope: Scope) -> MultiDict[str]:
    request: Request[Any, Any, Any] = Request(scope)
    return request.query_params


def post_query(scope: Scope) -> MultiDict[str]:
    """The query parameters of a POST; any other method is refused (405, with Allow)."""
    if cast("HTTPScope", scope)["method"] != "POST":  # an http route: never a websocket
        raise MethodNotAllowedException(headers={"Allow": "POST"})
    return query_of(scope)


# A hot route's JSON body, at most this long (a purchase code's is about 80 bytes).
BODY_MAX_BYTES = 1024
# The headers by which a request says it has a body (Content-Length: 0 says it has none).
BODY_HEADERS = frozenset((b"content-length", b"transfer-encoding"))


async def read_body(scope: Scope, receive: Receive) -> bytes:
    """The request's body, refused (400) past BODY_MAX_BYTES without reading the rest. A
    request that declares none is not waited on (measured: the wait cost a bodiless purchase
    about 0.1 ms)."""
    if not any(name in BODY_HEADERS and value != b"0" for name, value in scope["headers"]):
        return b""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b""
        body += message.get("body", b"")
        if len(body) > BODY_MAX_BYTES:
            raise NotsaleError(
                ErrorCode.INVALID_REQUEST, f"The body may be at most {BODY_MAX_BYTES} bytes."
            )
        if not message.get("more_body", False):
            return body


async def send_json(
    send: Send, status: int, body: bytes, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                NOSNIFF,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_body(scope: Scope, send: Send, body: Body) -> None:
    metrics.hot_answer(scope, 200, "ok")
    await send_json(send, 200, ENCODER.encode(body))


async def send_refusal(
    scope: Scope, send: Send, code: ErrorCode, retry_after_s: int | None = None
) -> None:
    """A refusal the handler decided; the raised ones are recorded by api.errors."""
    metrics.hot_answer(scope, STATUS[code], code)
    headers = () if retry_after_s is None else ((b"retry-after", str(retry_after_s).encode()),)
    await send_json(send, STATUS[code], REFUSALS[code], headers)


# Straight answers of at least this many bytes go gzipped to clients that accept it, at
# gzip's fastest level: an items page (12 KB) to 1.9 KB in 36 µs, where level 6 took 93 µs
# for 1.8 KB (measured): anyone may ask for pages as often as they like.
GZIP_MIN_BYTES = 500
GZIP_FAST = 1


def header(scope: Scope, name: bytes) -> bytes:
    return next((value for key, value in scope["headers"] if key == name), b"")


def current(if_none_match: str, tag: str) -> bool:
    """Whether a client's If-None-Match names `tag`: its copy is current."""
    return tag in if_none_match.split(", ")


async def send_revalidated(scope: Scope, send: Send, body: bytes, tag: str) -> None:
    """A straight read's answer, as api.shared.revalidated's: 304 while the client's copy is
    current, else the body, gzipped for clients that accept it."""
    headers = [(b"etag", tag.encode()), (b"cache-control", b"no-cache")]
    if current(header(scope, b"if-none-match").decode("latin-1"), tag):
        await send({"type": "http.response.start", "status": 304, "headers": [NOSNIFF, *headers]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if len(body) >= GZIP_MIN_BYTES:
        headers.append((b"vary", b"Accept-Encoding"))
        if b"gzip" in header(scope, b"accept-encoding"):
            squeezer = zlib.compressobj(GZIP_FAST, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            body = squeezer.compress(body) + squeezer.flush()
            headers.append((b"content-encoding", b"gzip"))
    await send_json(send, 200, body, tuple(headers))
