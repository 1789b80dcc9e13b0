"""GET /: the buyers' page, one file of plain HTML, CSS and JavaScript (notsale/web/), using
only the public routes. Nothing is loaded from elsewhere, and its policy says so."""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from litestar import Controller, MediaType, Request, Response, get

PAGE = resources.files("notsale").joinpath("web/index.html").read_bytes()
ETAG = f'"{hashlib.blake2b(PAGE, digest_size=8).hexdigest()}"'
HEADERS = {
    "ETag": ETAG,
    "Cache-Control": "no-cache",  # asked again each time, answered 304 while unchanged
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'"
    ),
}


class PageController(Controller):
    path = "/"
    tags = ("page",)

    @get(summary="The buyers' page", media_type=MediaType.HTML)
    async def page(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        if request.headers.get("if-none-match") == ETAG:
            return Response(b"", status_code=304, headers=HEADERS, media_type=MediaType.HTML)
        return Response(PAGE, headers=HEADERS, media_type=MediaType.HTML)
