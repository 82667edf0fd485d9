"""One error shape for every answer: `{"detail": "a sentence"}`.

FastAPI answers a request that fails validation with a list of pydantic errors under `detail`; here
that list becomes one sentence naming each field, and the list moves to `errors` for programs.
"""

import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shared.i18n import DEFAULT_LOCALE, clipped, current_locale, say

# Where a value came from, as FastAPI's `loc` names it; the body is implied.
_SOURCES = {
    "en": {"query": "query parameter", "path": "path parameter", "header": "header", "cookie": "cookie"},
    "ko": {"query": "쿼리 매개변수", "path": "경로 매개변수", "header": "헤더", "cookie": "쿠키"},
}
_WHOLE_BODY = {"en": "the request body", "ko": "요청 본문"}

# pydantic's message (`msg`, English only) in Korean, by error `type`, with the error's `ctx` values;
# a type not listed here gets `_KO_OTHER` (never pydantic's English).
_KO_MESSAGES = {
    "missing": "빠졌습니다",
    "string_too_short": "{min_length}자 이상이어야 합니다",
    "string_too_long": "{max_length}자 이하여야 합니다",
    "too_short": "{min_length}개 이상이어야 합니다",
    "too_long": "{max_length}개 이하여야 합니다",
    "string_type": "문자열이어야 합니다",
    "int_parsing": "정수여야 합니다",
    "int_type": "따옴표 없이 2처럼 쓴 정수여야 합니다",
    "int_from_float": "정수여야 합니다",
    "float_parsing": "숫자여야 합니다",
    "float_type": "따옴표 없이 2.5처럼 쓴 숫자여야 합니다",
    "bool_parsing": "true 또는 false여야 합니다",
    "bool_type": "따옴표 없이 true 또는 false여야 합니다",
    "greater_than": "{gt}보다 커야 합니다",
    "greater_than_equal": "{ge} 이상이어야 합니다",
    "less_than": "{lt}보다 작아야 합니다",
    "less_than_equal": "{le} 이하여야 합니다",
    "literal_error": "다음 중 하나여야 합니다: {expected}",
    "enum": "다음 중 하나여야 합니다: {expected}",
    "uuid_parsing": "올바른 ID(UUID)가 아닙니다",
    "uuid_type": "올바른 ID(UUID)가 아닙니다",
    "list_type": "목록이어야 합니다",
    "dict_type": "JSON 객체여야 합니다",
    "model_attributes_type": "JSON 객체여야 합니다",
    "model_type": "JSON 객체여야 합니다",
    "extra_forbidden": "받지 않는 항목입니다",
    "value_error": "값이 올바르지 않습니다",
    "string_pattern_mismatch": "형식이 올바르지 않습니다",
    "datetime_parsing": "올바른 날짜와 시간이 아닙니다",
    "url_parsing": "올바른 URL이 아닙니다",
    "null_forbidden": "값을 비울 수 없습니다. 바꾸지 않으려면 이 항목을 빼 주세요",
    "consent_true": "동의하려면 따옴표 없이 true여야 합니다. 동의 철회는 DELETE /v1/me/consent입니다",
    "style_unknown": "없는 스타일입니다. 고를 수 있는 스타일: {choices}",
    "styles_repeated": (
        "{style}이(가) 두 번 이상 있습니다. 스타일은 한 번씩만 고르고, "
        "한 스타일의 사진을 더 받으려면 count를 늘려 주세요"
    ),
}
_KO_OTHER = "값이 올바르지 않습니다"
_KO_EMAIL = "올바른 이메일 주소가 아닙니다"


def field_name(loc: tuple[Any, ...] | list[Any], locale: str = DEFAULT_LOCALE) -> str:
    """`("body", "styles", 0)` -> `styles[0]`; `("query", "limit")` -> `query parameter limit`
    (`쿼리 매개변수 limit` in Korean: the field's own name is the API's and stays as it is)."""
    parts = list(loc)
    sources = _SOURCES.get(locale, _SOURCES[DEFAULT_LOCALE])
    source = sources.get(parts[0]) if parts else None
    if parts and parts[0] in ("body", *sources):
        parts = parts[1:]
    name = ""
    for part in map(_clipped_part, parts):
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    name = name or _WHOLE_BODY.get(locale, _WHOLE_BODY[DEFAULT_LOCALE])
    return f"{source} {name}" if source else name


def _clipped_part(part: Any) -> Any:
    """A `loc` part as an answer may echo it: a key the client sent (an unknown field) is clipped."""
    return clipped(part) if isinstance(part, str) else part


def error_message(error: dict[str, Any], locale: str = DEFAULT_LOCALE) -> str:
    """One pydantic error's message in `locale`: pydantic's own `msg` in English; in Korean the
    sentence for its `type` (`_KO_MESSAGES`, values from its `ctx`), else a general one."""
    kind = error.get("type", "")
    if kind == "json_invalid":  # pydantic: "JSON decode error"; where it failed is in `loc`
        return say("validation.json", locale, at="")
    if locale == DEFAULT_LOCALE:
        # pydantic prefixes a validator's own sentence with "Value error, ": words for developers
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ").rstrip(".")
        if kind == "value_error" and "email address" in msg:
            return EMAIL_INVALID  # email-validator's reasons quote the address ("found `x`")
        if kind in _EN_MESSAGES:
            return _EN_MESSAGES[kind]
        return _plain(_json_spelling(msg) if kind in ("literal_error", "enum") else msg)
    if kind == "value_error" and NOT_MAILABLE in str(error.get("msg", "")):
        return _KO_NOT_MAILABLE
    if kind == "value_error" and "email" in str(error.get("msg", "")).lower():
        return _KO_EMAIL
    template = _KO_MESSAGES.get(kind, _KO_OTHER)
    ctx = {
        name: ", ".join(map(str, value)) if isinstance(value, list | tuple) else value
        for name, value in (error.get("ctx") or {}).items()
    }
    if kind in ("literal_error", "enum") and isinstance(ctx.get("expected"), str):
        # pydantic's list ends in English: "'en' or 'ko'"
        ctx["expected"] = _json_spelling(ctx["expected"]).replace(" or ", ", ")
    try:
        return template.format(**ctx)
    except (KeyError, IndexError, ValueError):
        return _KO_OTHER


EMAIL_INVALID = "value is not a valid email address"
# An address email-validator accepts but our mail cannot reach (SMTPUTF8: schemas.mailable).
NOT_MAILABLE = (
    "we cannot send mail to this address: the part before the @ may hold only ASCII letters, digits"
    " and punctuation; please use another address"
)
_KO_NOT_MAILABLE = (
    "이 주소로는 메일을 보낼 수 없습니다. "
    "@ 앞부분에는 영문자, 숫자, 기호만 쓸 수 있으니 다른 주소를 써 주세요"
)
EXTRA_FIELD = "not a field of this request"
NULL_FIELD = "may not be null; leave the field out to keep its value"  # schemas.not_null
# schemas.consent_given: whatever else was sent (false, "yes", 1), one hint that does not contradict
# itself ("true or false" for "yes", then "must be true" for false).
CONSENT_TRUE = "must be true, without quotes, to record your agreement; DELETE /v1/me/consent withdraws it"
# pydantic's English where a JSON client needs other words, by error `type` (the `errors` list keeps
# pydantic's `msg`). Request bodies are strict (schemas.BodyIn): the `*_type` errors there mean a
# value of another JSON type, mostly a number or boolean sent as a string.
_EN_MESSAGES = {
    "extra_forbidden": EXTRA_FIELD,  # pydantic: "Extra inputs are not permitted"
    "bool_type": "must be true or false, without quotes",
    "int_type": "must be a whole number like 2, without quotes",
    "float_type": "must be a number like 2.5, without quotes",
    # pydantic: "Input should be a valid UUID, invalid character: expected an optional prefix of ..."
    "uuid_parsing": "must be an ID like 123e4567-e89b-42d3-a456-426614174000",
    "uuid_type": "must be an ID like 123e4567-e89b-42d3-a456-426614174000",
    "missing": "is missing",  # pydantic: "Field required"
    "int_parsing": "must be a whole number like 2",  # a query parameter: "unable to parse string as ..."
    "float_parsing": "must be a number like 2.5",
}


def _plain(msg: str) -> str:
    """pydantic's English as the rest of the sentence reads: `count (must be at least 1)`, not
    `count (Input should be greater than or equal to 1)`; `styles (must have at least 1 item)`, not
    `(List should have at least 1 item after validation, not 0)`."""
    msg = re.sub(r"^Input should be ", "must be ", msg)
    msg = re.sub(r"^(?:List|String|Tuple|Set|Dictionary|Value) should have ", "must have ", msg)
    msg = msg.replace("greater than or equal to", "at least").replace("less than or equal to", "at most")
    return re.sub(r"( after validation)?, not \d+$", "", msg)


def _json_spelling(text: str) -> str:
    """Python's True, False and None as a JSON client writes them (pydantic's literal errors say
    "Input should be True" of a field that takes `true`)."""
    return re.sub(
        r"\b(True|False|None)\b", lambda m: {"True": "true", "False": "false", "None": "null"}[m[1]], text
    )


def validation_sentence(errors: list[dict[str, Any]], locale: str = DEFAULT_LOCALE) -> str:
    """One sentence for a list of pydantic errors, in `locale`, e.g.
    `Please check these fields: email (value is not a valid email address), password (...).`
    (`다음 항목을 확인해 주세요: email(올바른 이메일 주소가 아닙니다), ...` in Korean).

    A body that is not JSON at all (FastAPI's `json_invalid`, `loc` = `("body", offset)`) gets
    `The request body is not valid JSON (at character 16).`
    """
    for e in errors:
        if e.get("type") == "json_invalid":
            loc = list(e.get("loc", ()))
            at = say("validation.json_at", locale, at=loc[-1]) if loc and isinstance(loc[-1], int) else ""
            return say("validation.json", locale, at=at)
    gap = " " if locale == DEFAULT_LOCALE else ""
    listed = errors[:MAX_ERRORS_LISTED]
    parts = [f"{field_name(e.get('loc', ()), locale)}{gap}({error_message(e, locale)})" for e in listed]
    fields = ", ".join(parts)
    if len(errors) > len(listed):  # ", and 2990 more" / " 외 2990개"
        fields += say("validation.more", locale, count=len(errors) - len(listed))
    return say("validation.fields", locale, count=len(errors), fields=fields)


# A 422 names at most this many errors, in `detail` and in `errors` (the rest are counted): a 64 KiB
# body of a few thousand unknown keys made an answer 15 times its size.
MAX_ERRORS_LISTED = 10


# What of each pydantic error reaches the client. Never `input`: it echoes what was sent (a password,
# a whole raw body) and may hold NaN/Infinity, which JSON cannot encode (Starlette: allow_nan=False).
ERROR_KEYS = ("loc", "msg", "type")


def public_errors(errors: Sequence[Any], locale: str = DEFAULT_LOCALE) -> list[dict[str, Any]]:
    """The first MAX_ERRORS_LISTED of pydantic's errors reduced to `{"loc", "msg", "type"}` each,
    JSON-safe; `msg` is `error_message` in `locale`, the words the sentence in `detail` quotes
    (pydantic's own can quote what was sent: "invalid character: found `z` at 0" of a UUID,
    email-validator's reasons)."""
    errors = errors[:MAX_ERRORS_LISTED]
    public = [{k: e[k] for k in ERROR_KEYS if k in e} for e in errors]
    for raw, e in zip(errors, public, strict=True):
        e["msg"] = error_message(raw, locale)
        e["loc"] = [_clipped_part(part) for part in e.get("loc", ())]
    return jsonable_encoder(public)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 `{"detail": sentence, "errors": [{"loc", "msg", "type"}, ...]}` (pydantic's errors
    without the values sent)."""
    raw = exc.errors()
    locale = current_locale.get()
    errors = public_errors(raw, locale)
    sentence = validation_sentence(list(raw), locale)
    if _object_expected_but_not_json(raw, request.headers.get("content-type", "")):
        sentence = say("validation.not_json", locale)  # the body may be fine: its type is not
    return JSONResponse(
        {"detail": sentence, "errors": errors},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _object_expected_but_not_json(errors: Sequence[Any], content_type: str) -> bool:
    """A JSON body route got a body FastAPI did not parse as JSON (sent as text/plain, a form, or
    without Content-Type): pydantic then says "Input should be a valid dictionary", about a body
    that may well be a JSON object."""
    whole_body = any(
        tuple(e.get("loc", ())) == ("body",) and e.get("type") in OBJECT_EXPECTED for e in errors
    )
    media = content_type.split(";")[0].strip().lower()
    return whole_body and not (media == "application/json" or media.endswith("+json"))


OBJECT_EXPECTED = {"model_attributes_type", "dict_type", "model_type"}


# Every other refusal (401, 403, 404, 409, 413, 415, 429, 503 ...) answers this one shape; the
# OpenAPI schema says so as each operation's `default` response.
def _detail_schema(title: str, detail: str, **more: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema of `{"detail": "a sentence", **more}`; `detail` describes the sentence."""
    sentence = {"type": "string", "title": "Detail", "description": detail}
    properties = {"detail": sentence, **more}
    return {"title": title, "type": "object", "required": ["detail"], "properties": properties}


ERROR_SCHEMA = _detail_schema("Error", "one sentence for a person, in the request's language")
ERROR_RESPONSE = {
    "description": "Any other error status, with a sentence saying what went wrong",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def install_validation_errors(app: FastAPI) -> None:
    """Answer validation errors with `validation_error`, and say so in the OpenAPI schema (/docs)."""
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        schemas = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in schemas:
            schemas["HTTPValidationError"] = _detail_schema(
                "HTTPValidationError",
                f"one sentence naming the fields (at most {MAX_ERRORS_LISTED}, then how many more)",
                errors={
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/ValidationError"},
                    "maxItems": MAX_ERRORS_LISTED,
                },
            )
            # What `public_errors` sends: never pydantic's `input` (the value sent) or `ctx`.
            item = schemas["ValidationError"]
            item["properties"] = {k: v for k, v in item["properties"].items() if k in ERROR_KEYS}
        schemas["Error"] = ERROR_SCHEMA
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.get("responses", {})
                responses.setdefault("default", ERROR_RESPONSE)
                for code, response in responses.items():
                    # A refusal a route declares for its headers (login's 429: Retry-After) has the
                    # `{"detail"}` body all the same.
                    if code[0] in "45" and "content" not in response:
                        response["content"] = ERROR_RESPONSE["content"]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
