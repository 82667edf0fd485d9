"""One error shape for every answer: `{"detail": "a sentence"}`.

FastAPI answers a request that fails validation with a list of pydantic errors under `detail`; here
that list becomes one sentence naming each field, and the list moves to `errors` for programs.
"""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Where a value came from, as FastAPI's `loc` names it; the body is implied.
_SOURCES = {"query": "query parameter", "path": "path parameter", "header": "header", "cookie": "cookie"}


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """`("body", "styles", 0)` -> `styles[0]`; `("query", "limit")` -> `query parameter limit`."""
    parts = list(loc)
    source = _SOURCES.get(parts[0]) if parts else None
    if parts and parts[0] in ("body", *_SOURCES):
        parts = parts[1:]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    name = name or "the request body"
    return f"{source} {name}" if source else name


def validation_sentence(errors: list[dict[str, Any]]) -> str:
    """One sentence for a list of pydantic errors, e.g.
    `Please check these fields: email (value is not a valid email address), password (...).`

    A body that is not JSON at all (FastAPI's `json_invalid`, `loc` = `("body", offset)`) gets
    `The request body is not valid JSON (at character 16).`
    """
    for e in errors:
        if e.get("type") == "json_invalid":
            loc = list(e.get("loc", ()))
            at = f" (at character {loc[-1]})" if loc and isinstance(loc[-1], int) else ""
            return f"The request body is not valid JSON{at}."
    parts = [f"{field_name(e.get('loc', ()))} ({e.get('msg', 'invalid').rstrip('.')})" for e in errors]
    noun = "this field" if len(parts) == 1 else "these fields"
    return f"Please check {noun}: {', '.join(parts)}."


# What of each pydantic error reaches the client. Never `input`: it echoes what was sent (a password,
# a whole raw body) and may hold NaN/Infinity, which JSON cannot encode (Starlette: allow_nan=False).
ERROR_KEYS = ("loc", "msg", "type")


def public_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """pydantic's errors reduced to `{"loc", "msg", "type"}` each, JSON-safe."""
    return jsonable_encoder([{k: e[k] for k in ERROR_KEYS if k in e} for e in errors])


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 `{"detail": sentence, "errors": [{"loc", "msg", "type"}, ...]}` (pydantic's errors
    without the values sent)."""
    errors = public_errors(exc.errors())
    return JSONResponse(
        {"detail": validation_sentence(errors), "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_ENTITY,
    )


def install_validation_errors(app: FastAPI) -> None:
    """Answer validation errors with `validation_error`, and say so in the OpenAPI schema (/docs)."""
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schemas = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = {
                "title": "HTTPValidationError",
                "type": "object",
                "required": ["detail"],
                "properties": {
                    "detail": {
                        "type": "string",
                        "title": "Detail",
                        "description": "one sentence naming the fields",
                    },
                    "errors": {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                },
            }
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
