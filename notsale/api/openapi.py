"""The OpenAPI document's parameters, stated as strictly as the handlers check them.

Handlers read their parameters raw, so that a malformed checkout still reaches its handler
and becomes an attempt row; Litestar then documents them as optional strings. This puts the
real rules into the document, from the same patterns the handlers validate with."""

from __future__ import annotations

from litestar.openapi.spec import OpenAPI, OpenAPIType, Schema

from notsale.api.params import INT64_MAX, INT64_MIN, USER_ID
from notsale.engine.codes import CODE_PATTERN

USER = Schema(type=OpenAPIType.STRING, pattern=f"^{USER_ID.pattern}$", min_length=1, max_length=64)
INTEGER = Schema(type=OpenAPIType.INTEGER, format="int64", minimum=INT64_MIN, maximum=INT64_MAX)
CODE = Schema(type=OpenAPIType.STRING, pattern=f"^{CODE_PATTERN.pattern}$", min_length=1)

# (path, method) -> {parameter: (schema, required)}
RAW_PARAMETERS: dict[tuple[str, str], dict[str, tuple[Schema, bool]]] = {
    ("/checkout", "post"): {"user_id": (USER, True), "id": (INTEGER, True)},
    ("/purchase", "post"): {"code": (CODE, True)},
    ("/sales/{sale_id}/items/{item_id}", "get"): {
        "sale_id": (INTEGER, True),
        "item_id": (INTEGER, True),
    },
    ("/sales/{sale_id}/items/{item_id}/image.svg", "get"): {
        "sale_id": (INTEGER, True),
        "item_id": (INTEGER, True),
    },
    ("/users/{user_id}/purchases", "get"): {"user_id": (USER, True), "sale_id": (INTEGER, False)},
}


def document_raw_parameters(doc: OpenAPI) -> None:
    assert doc.paths is not None
    for (path, method), rules in RAW_PARAMETERS.items():
        operation = getattr(doc.paths[path], method)
        for parameter in operation.parameters or []:
            if parameter.name in rules:
                parameter.schema, parameter.required = rules[parameter.name]
