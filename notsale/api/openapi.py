"""The OpenAPI document's parameters, stated as strictly as the handlers check them.

Handlers read their parameters raw, so that a malformed checkout still reaches its handler
and becomes an attempt row; Litestar then documents them as optional strings. This puts the
real rules into the document, from the same patterns the handlers validate with. The two hot
routes (notsale.api.hot) are `asgi` handlers, which Litestar leaves out: each carries a
HotRouteDoc in its `opt`, from which its whole entry is written here."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from litestar import Litestar
from litestar.openapi.spec import (
    OpenAPI,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    PathItem,
    Reference,
    Schema,
)
from litestar.routes import ASGIRoute

from notsale.admission import ADMISSION as ADMISSION_PATTERN
from notsale.admission import TICKET as TICKET_PATTERN
from notsale.api.errors import error_groups
from notsale.api.models import Body, ErrorBody
from notsale.api.params import INT64_MAX, PAGE_MAX, PREQUEUE_PAGE_MAX
from notsale.api.params import INTEGER as CANONICAL
from notsale.engine.codes import CODE_PATTERN
from notsale.errors import ErrorCode
from notsale.identity import USER_ID

USER = Schema(type=OpenAPIType.STRING, pattern=f"^{USER_ID.pattern}$", min_length=1, max_length=64)
# OpenAPI's "int64" format is missing from Litestar's OpenAPIFormat enum, hence the ignore.
INTEGER = Schema(
    type=OpenAPIType.INTEGER,
    format="int64",  # type: ignore[arg-type]
    minimum=0,
    maximum=INT64_MAX,
    description=f"canonical decimal: ^({CANONICAL.pattern})$",
)
CODE = Schema(type=OpenAPIType.STRING, pattern=f"^{CODE_PATTERN.pattern}$", min_length=1)
ADMISSION = Schema(type=OpenAPIType.STRING, pattern=f"^{ADMISSION_PATTERN.pattern}$")
TICKET = Schema(type=OpenAPIType.STRING, pattern=f"^{TICKET_PATTERN.pattern}$")

PAGE_COUNT = Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=PAGE_MAX)
PREQUEUE_COUNT = Schema(type=OpenAPIType.INTEGER, minimum=1, maximum=PREQUEUE_PAGE_MAX)

# (path, method) -> {parameter: (schema, required)}
RAW_PARAMETERS: dict[tuple[str, str], dict[str, tuple[Schema, bool]]] = {
    ("/sales/{sale_id}/items", "get"): {
        "sale_id": (INTEGER, True),
        "from": (INTEGER, False),
        "count": (PAGE_COUNT, False),
    },
    ("/sales/{sale_id}/items/{item_id}", "get"): {
        "sale_id": (INTEGER, True),
        "item_id": (INTEGER, True),
    },
    ("/sales/{sale_id}/items/{item_id}/image.svg", "get"): {
        "sale_id": (INTEGER, True),
        "item_id": (INTEGER, True),
    },
    ("/users/{user_id}/purchases", "get"): {"user_id": (USER, True), "sale_id": (INTEGER, False)},
    ("/sales/{sale_id}/queue", "post"): {"sale_id": (INTEGER, True), "user_id": (USER, True)},
    ("/sales/{sale_id}/queue", "get"): {"sale_id": (INTEGER, True), "ticket": (TICKET, True)},
    ("/sales/{sale_id}/fairness", "get"): {"sale_id": (INTEGER, True)},
    ("/sales/{sale_id}/fairness/prequeue", "get"): {
        "sale_id": (INTEGER, True),
        "from": (INTEGER, False),
        "count": (PREQUEUE_COUNT, False),
    },
}

# The key of an `asgi` route handler's `opt` that holds its HotRouteDoc.
OPENAPI_OPT = "openapi"
JSON_TYPES = {int: OpenAPIType.INTEGER, str: OpenAPIType.STRING}


class HotRouteDoc(NamedTuple):
    """The OpenAPI entry of a POST route answered by an `asgi` handler."""

    tag: str
    summary: str
    description: str
    parameters: tuple[Parameter, ...]
    body: type[Body]  # the 200 answer
    errors: tuple[ErrorCode, ...]  # besides invalid_request and unavailable


def query(name: str, schema: Schema, description: str, required: bool = True) -> Parameter:
    """A query parameter (required unless said otherwise)."""
    return Parameter(
        name=name, param_in="query", schema=schema, required=required, description=description
    )


def body_schema(body: type[Body]) -> Schema:
    """The schema of a flat body (string and integer fields), as Litestar writes one."""
    fields = msgspec.structs.fields(body)
    return Schema(
        type=OpenAPIType.OBJECT,
        title=body.__name__,
        properties={f.encode_name: Schema(type=JSON_TYPES[f.type]) for f in fields},
        required=sorted(f.encode_name for f in fields),
    )


def json_response(description: str, body: type[Body]) -> OpenAPIResponse:
    schema = Reference(ref=f"#/components/schemas/{body.__name__}")
    return OpenAPIResponse(
        description=description, content={"application/json": OpenAPIMediaType(schema=schema)}
    )


def document_hot_routes(app: Litestar) -> None:
    doc = app.openapi_schema
    assert doc.paths is not None and doc.components.schemas is not None
    for route in app.routes:
        if not isinstance(route, ASGIRoute):
            continue
        hot: Any = route.route_handler.opt.get(OPENAPI_OPT)
        if not isinstance(hot, HotRouteDoc):
            continue
        responses: dict[str, OpenAPIResponse | Reference] = {"200": json_response("OK", hot.body)}
        for status, text in error_groups(*hot.errors).items():
            responses[str(status)] = json_response(text, ErrorBody)
        doc.paths[route.path] = PathItem(
            post=Operation(
                tags=[hot.tag],
                summary=hot.summary,
                description=hot.description,
                operation_id=route.route_handler.handler_name,
                parameters=list(hot.parameters),
                responses=responses,
            )
        )
        doc.components.schemas.setdefault(hot.body.__name__, body_schema(hot.body))


def document_raw_parameters(doc: OpenAPI) -> None:
    assert doc.paths is not None
    for (path, method), rules in RAW_PARAMETERS.items():
        operation = getattr(doc.paths[path], method)
        for parameter in operation.parameters or []:
            if parameter.name in rules:
                parameter.schema, parameter.required = rules[parameter.name]
