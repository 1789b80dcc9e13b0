"""GET /: the buyers' page, plain HTML with its stylesheet and script beside it
(notsale/web/), using only the public routes. Nothing is loaded from elsewhere, nothing runs
inline, and no other site may frame it: its policy says so."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from litestar import Controller, MediaType, Request, Response, get

from notsale.api.shared import NOT_MODIFIED, etag, revalidated
from notsale.services import ServicesDep

# No inline script or style, nothing from elsewhere, never framed (clickjacking).
PAGE_POLICY = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class Asset:
    """One file of the page, answered 304 while the client's copy is current."""

    def __init__(self, name: str, media_type: str, body: bytes | None = None) -> None:
        self.body = body or resources.files("notsale").joinpath(f"web/{name}").read_bytes()
        self.media_type = media_type
        self.tag = etag(self.body)

    def answer(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        policy = {"Content-Security-Policy": PAGE_POLICY}
        return revalidated(request, self.body, self.media_type, policy, self.tag)


PAGE = Asset("index.html", MediaType.HTML)
OPEN_MODE = b'<meta name="notsale-admission" content="open">'


@functools.cache
def queue_page(prequeue_seconds: int) -> Asset:
    """The page as served in queue mode: its script then shows the waiting room, from the
    next sale's pre-queue on (page.js)."""
    mode = f'<meta name="notsale-admission" content="queue" data-prequeue="{prequeue_seconds}">'
    return Asset("index.html", MediaType.HTML, PAGE.body.replace(OPEN_MODE, mode.encode()))


STYLE = Asset("page.css", "text/css")
SCRIPT = Asset("page.js", "text/javascript")


class PageController(Controller):
    path = "/"
    tags = ("page",)

    @get(summary="The buyers' page", media_type=MediaType.HTML, responses=NOT_MODIFIED)
    async def page(self, request: Request[Any, Any, Any], services: ServicesDep) -> Response[bytes]:
        settings = services.settings
        queued = settings.admission == "queue"
        return (queue_page(settings.prequeue_seconds) if queued else PAGE).answer(request)

    @get(
        "/page.css", summary="The page's stylesheet", media_type="text/css", responses=NOT_MODIFIED
    )
    async def style(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return STYLE.answer(request)

    @get(
        "/page.js",
        summary="The page's script",
        media_type="text/javascript",
        responses=NOT_MODIFIED,
    )
    async def script(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return SCRIPT.answer(request)
