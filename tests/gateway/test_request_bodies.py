"""Request bodies take JSON's own types, and every refusal is the README's 422: a sentence naming the
field, and `errors` with its `loc`, never the value sent.

`"email_results": "yes"` was taken as true and `"count": "2"` as 2 (pydantic's lax mode, which FastAPI
runs on the parsed body); `{"locale": null}` on PATCH /v1/me answered 200 and changed nothing; an
unknown style was a 422 of another shape that quoted the value back. The walk below covers every JSON
body of the OpenAPI schema, so a body added later is held to the same rules: each is sent valid but for
one field (so the one error also shows the others passed, UUIDs given as strings included).
"""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.gateway.app import create_app
from shared.styles import load_styles
from tests.conftest import Api
from tests.gateway.test_korean_everywhere import HANGUL, KOREAN, NAMES, api_names, english_words

OPENAPI = create_app().openapi()
SCHEMAS = OPENAPI["components"]["schemas"]
# Values of another JSON type than the field's, as loose clients send them.
WRONG: dict[str, list[Any]] = {
    "boolean": ["true", "yes", 1, 0],
    "integer": ["2", True, [2]],
    "number": ["2.5", True],
    "string": [5, True, ["x"]],
    "array": ["x", {"x": 1}],
}


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMAS[node["$ref"].rsplit("/", 1)[1]]
    return node


def _nullable(prop: dict[str, Any]) -> bool:
    return any(branch.get("type") == "null" for branch in prop.get("anyOf", []))


def _plain(prop: dict[str, Any]) -> dict[str, Any]:
    """The schema of the non-null value (`anyOf: [X, null]` -> X)."""
    branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
    assert len(branches) == 1, f"teach this test the union {prop}"
    return _deref(branches[0])


def example(prop: dict[str, Any]) -> Any:
    """A valid JSON value for a property's schema."""
    prop = _plain(prop)
    if "examples" in prop:
        return prop["examples"][0]
    if "const" in prop:
        return prop["const"]
    if "enum" in prop:
        return prop["enum"][0]
    kind = prop.get("type")
    if kind == "string":
        fmt = prop.get("format")
        if fmt == "uuid":
            return str(uuid.uuid4())
        if fmt == "email":
            return f"body-{uuid.uuid4().hex[:8]}@example.com"
        assert fmt is None, f"teach this test the format {fmt}"
        return "s" * max(prop.get("minLength", 1), 1)
    if kind == "boolean":
        return True
    if kind == "integer":
        return int(prop.get("minimum", 1))  # the schema writes 1.0
    if kind == "number":
        return prop.get("minimum", 1.5)
    if kind == "array":
        return [example(prop["items"])] * max(prop.get("minItems", 1), 1)
    raise AssertionError(f"teach this test the schema {prop}")


def wrong_values(prop: dict[str, Any]) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """(a value of another JSON type, the `loc` under the field its error names)."""
    plain = _plain(prop)
    kind = plain.get("type") or ("boolean" if isinstance(plain.get("const"), bool) else None)
    if "enum" in plain or "const" in plain:
        yield from ((v, ()) for v in WRONG.get(kind or "string", [1]))
        return
    yield from ((v, ()) for v in WRONG[kind])
    if kind == "array":
        items = _plain(plain["items"])
        yield from (([v], (0,)) for v in WRONG[items["type"]])


def enum_values(node: Any) -> set[str]:
    """Every string an enum of the schema takes (`en`, `woman`): names of the API, in any language."""
    if isinstance(node, list):
        return set().union(*map(enum_values, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {v for v in node.get("enum", []) if isinstance(v, str)}
    return found.union(*map(enum_values, node.values()))


def json_bodies() -> Iterator[Any]:
    for path, item in OPENAPI["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content:
                schema = _deref(content["application/json"]["schema"])
                yield pytest.param(method.upper(), path, schema, id=f"{method.upper()} {path}")


BODIES = list(json_bodies())


def test_the_walk_covers_the_json_bodies() -> None:
    routes = {param.values[:2] for param in BODIES}
    assert {("PATCH", "/v1/me"), ("POST", "/v1/portraits"), ("POST", "/v1/me/consent")} <= routes
    assert len(routes) >= 11, routes


def _check_422(r: httpx.Response, loc: list[Any], what: str) -> list[str]:
    """What is wrong with `r` as the documented 422 for one field at `loc` (empty: nothing)."""
    if r.status_code != 422:
        return [f"{what}: {r.status_code} {r.text[:200]}"]
    body = r.json()
    field = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i > 1 else p) for i, p in enumerate(loc))
    field = field.removeprefix("body")
    problems = []
    if set(body) != {"detail", "errors"} or [e.get("loc") for e in body["errors"]] != [loc]:
        problems.append(f"{what}: not one error at {loc}: {body}")
    elif any(set(e) != {"loc", "msg", "type"} for e in body["errors"]):
        problems.append(f"{what}: errors hold more than loc, msg, type: {body}")
    if not body.get("detail", "").startswith(f"Please check this field: {field} ("):
        problems.append(f"{what}: the sentence does not name {field}: {body.get('detail')}")
    return problems


@pytest.mark.parametrize(("method", "path", "schema"), BODIES)
def test_a_json_body_takes_only_json_types_and_refuses_in_the_documented_shape(
    api: Api, method: str, path: str, schema: dict[str, Any]
) -> None:
    user = api.new_user()
    props = schema["properties"]
    valid = {name: example(prop) for name, prop in props.items()}

    def send(body: dict[str, Any], headers: dict[str, str] | None = None) -> httpx.Response:
        headers = {**user.auth, "Idempotency-Key": uuid.uuid4().hex, **(headers or {})}
        return api.request(method, path, json=body, headers=headers)

    problems = _check_422(send({**valid, "not_a_field": 1}), ["body", "not_a_field"], "extra field")
    for name, prop in props.items():
        for value, under in wrong_values(prop):
            r = send({**valid, name: value})
            problems += _check_422(r, ["body", name, *under], f"{name}={value!r}")
            if isinstance(value, str) and r.status_code == 422 and json.dumps(value) in r.text:
                problems.append(f"{name}={value!r}: the value is quoted back: {r.text}")
        if not _nullable(prop):  # null for a field that cannot be null (PATCH: it changed nothing)
            problems += _check_422(send({**valid, name: None}), ["body", name], f"{name}=null")
    # In Korean too, with no English word but the API's own names.
    name = next(iter(props))
    r = send({**valid, name: next(wrong_values(props[name]))[0]}, headers=KOREAN)
    detail = r.json().get("detail", "")
    allowed = NAMES | api_names(OPENAPI) | enum_values(OPENAPI) | set(load_styles())
    if r.status_code != 422 or not HANGUL.search(detail) or english_words(detail, allowed):
        problems.append(f"Korean: {r.status_code} {detail}")
    assert not problems, "\n".join(problems)


def test_patch_me_with_null_or_loose_types_changes_nothing_and_says_why(api: Api) -> None:
    """`{"locale": null}` answered 200 and changed nothing; `"email_results": "yes"` was taken as true."""
    user = api.new_user()
    before = api.get("/v1/me", headers=user.auth).json()
    r = api.patch("/v1/me", json={"locale": None}, headers=user.auth)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "Please check this field: locale (may not be null; leave the field out to keep its value)."
    )
    assert r.json()["errors"] == [
        {"loc": ["body", "locale"], "msg": "may not be null; leave the field out to keep its value",
         "type": "null_forbidden"}
    ]  # fmt: skip
    r = api.patch("/v1/me", json={"email_results": None}, headers={**user.auth, **KOREAN})
    assert r.status_code == 422 and "email_results(" in r.json()["detail"], r.text
    assert HANGUL.search(r.json()["detail"]), r.text
    r = api.patch("/v1/me", json={"email_results": "no", "locale": "ko"}, headers=user.auth)
    assert r.status_code == 422, r.text
    assert (
        r.json()["detail"]
        == "Please check this field: email_results (must be true or false, without quotes)."
    )
    r = api.patch("/v1/me", json={"email_results": "no"}, headers={**user.auth, **KOREAN})
    assert (
        r.json()["detail"]
        == "다음 항목을 확인해 주세요: email_results(따옴표 없이 true 또는 false여야 합니다)."
    ), r.text
    assert api.get("/v1/me", headers=user.auth).json() == before
    # What the page sends still works: a field left out keeps its value.
    r = api.patch("/v1/me", json={"email_results": False}, headers=user.auth)
    assert r.status_code == 200 and r.json()["email_results"] is False and r.json()["locale"] == "en", r.text
    r = api.patch("/v1/me", json={}, headers=user.auth)
    assert r.status_code == 200 and r.json()["email_results"] is False, r.text


def test_consent_refused_in_one_hint_that_says_how_it_ends(api: Api) -> None:
    """`"yes"` was told "true or false" and `false` then "must be true"; neither said how consent ends.
    `{}` was told "accept (is missing)", without the hint."""
    user = api.new_user()
    before = api.get("/v1/me", headers=user.auth).json()
    hint = "must be true, without quotes, to record your agreement; DELETE /v1/me/consent withdraws it"
    for body in ({"accept": "yes"}, {"accept": False}, {"accept": 1}, {"accept": None}, {}):
        r = api.post("/v1/me/consent", json=body, headers=user.auth)
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == f"Please check this field: accept ({hint}).", r.text
        assert [(e["loc"], e["type"]) for e in r.json()["errors"]] == [(["body", "accept"], "consent_true")]
    r = api.post("/v1/me/consent", json={"accept": False}, headers={**user.auth, **KOREAN})
    assert "동의 철회는 DELETE /v1/me/consent입니다" in r.json()["detail"], r.text
    assert api.get("/v1/me", headers=user.auth).json() == before  # a refusal withdraws nothing
    r = api.post("/v1/me/consent", json={"accept": True}, headers=user.auth)
    assert r.status_code == 200 and r.json()["face_consent_at"] == before["face_consent_at"], r.text


def test_a_count_as_a_string_is_refused_in_words(api: Api) -> None:
    user = api.new_user()
    body = {"likeness_id": str(uuid.uuid4()), "styles": ["black-white"], "count": "2"}
    r = api.post("/v1/portraits", json=body, headers=user.auth)
    assert r.status_code == 422, r.text
    assert (
        r.json()["detail"]
        == "Please check this field: count (must be a whole number like 2, without quotes)."
    )
    assert [e["type"] for e in r.json()["errors"]] == ["int_type"]
    r = api.post("/v1/portraits", json=body, headers={**user.auth, **KOREAN})
    assert r.json()["detail"] == "다음 항목을 확인해 주세요: count(따옴표 없이 2처럼 쓴 정수여야 합니다).", (
        r.text
    )
    # The list a client shows field by field speaks the same language as the sentence.
    assert r.json()["errors"] == [
        {"loc": ["body", "count"], "msg": "따옴표 없이 2처럼 쓴 정수여야 합니다", "type": "int_type"}
    ], r.text
    r = api.post("/v1/portraits", json={**body, "count": 2.0}, headers=user.auth)  # pydantic's strict int
    assert r.status_code == 422 and [e["type"] for e in r.json()["errors"]] == ["int_type"], r.text
    # UUIDs come as strings in JSON: a likeness that is not there is a 404, not a type error.
    r = api.post("/v1/portraits", json={**body, "count": 2}, headers=user.auth)
    assert r.status_code == 404, r.text


def test_an_unknown_style_is_the_documented_422_listing_the_styles(api: Api) -> None:
    """It answered `{"detail": "Unknown style: <the value sent>. ..."}`: the value quoted back (a NUL
    byte too) and no `errors`."""
    user = api.new_user()
    styles = ", ".join(load_styles())
    body = {"likeness_id": str(uuid.uuid4()), "styles": ["black-white", "nope\u0000x"]}
    r = api.post("/v1/portraits", json=body, headers=user.auth)
    assert r.status_code == 422, r.text
    assert r.json() == {
        "detail": f"Please check this field: styles[1] (not one of the styles: {styles}).",
        "errors": [
            {"loc": ["body", "styles", 1], "msg": f"not one of the styles: {styles}", "type": "style_unknown"}
        ],
    }
    assert "nope" not in r.text and "\\u0000" not in r.text
    r = api.post("/v1/portraits", json=body, headers={**user.auth, **KOREAN})
    assert (
        r.json()["detail"]
        == f"다음 항목을 확인해 주세요: styles[1](없는 스타일입니다. 고를 수 있는 스타일: {styles})."
    ), r.text


def test_a_style_asked_twice_is_a_422_that_points_to_count(api: Api) -> None:
    """["black-white", "black-white"] was merged into one style without a word: the client got
    half the portraits it asked for. `count` is how to ask for more of one style."""
    user = api.new_user()
    body = {"likeness_id": str(uuid.uuid4()), "styles": ["black-white", "studio-business", "black-white"]}
    r = api.post("/v1/portraits", json=body, headers=user.auth)
    assert r.status_code == 422, r.text
    assert r.json() == {
        "detail": "Please check this field: styles (black-white is listed more than once: choose each "
        "style once, and set count for more of one).",
        "errors": [
            {
                "loc": ["body", "styles"],
                "msg": "black-white is listed more than once: choose each style once, and set count for "
                "more of one",
                "type": "styles_repeated",
            }
        ],
    }
    r = api.post("/v1/portraits", json=body, headers={**user.auth, **KOREAN})
    assert r.json()["detail"] == (
        "다음 항목을 확인해 주세요: styles(black-white이(가) 두 번 이상 있습니다. 스타일은 한 번씩만 "
        "고르고, 한 스타일의 사진을 더 받으려면 count를 늘려 주세요)."
    ), r.text
    body["styles"] = ["black-white", "studio-business"]  # each once: on to the likeness (not there)
    assert api.post("/v1/portraits", json=body, headers=user.auth).status_code == 404


def test_every_operation_has_its_own_operation_id() -> None:
    """GET and HEAD /v1/system shared one operationId: FastAPI warned "Duplicate Operation ID" at the
    first /openapi.json, and generated clients trip on it (a newcomer's finding)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema = create_app().openapi()
    assert not [w for w in caught if "Duplicate Operation ID" in str(w.message)]
    ids = [
        op["operationId"] for item in schema["paths"].values() for op in item.values() if "operationId" in op
    ]
    assert len(ids) == len(set(ids))


def test_the_openapi_schema_describes_the_errors_as_they_are_sent(api: Api) -> None:
    """The schema listed only 2xx and 422, and its 422 items promised pydantic's `input` and `ctx`,
    which are never sent. Now each operation's `default` response is the `{"detail"}` shape, and
    real refusals fit what the schema says."""
    schemas = OPENAPI["components"]["schemas"]
    assert set(schemas["ValidationError"]["properties"]) == {"loc", "msg", "type"}
    styles = schemas["PortraitsIn"]["properties"]["styles"]
    assert styles["items"]["enum"] == list(load_styles()) and styles["uniqueItems"] is True
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    missing = [
        f"{method.upper()} {path}"
        for path, item in OPENAPI["paths"].items()
        for method, op in item.items()
        if op.get("responses", {}).get("default", {}).get("content") != error
    ]
    assert not missing, missing
    # A refusal declared for its headers has the body too: login's 429 had Retry-After, no schema.
    declared = [
        f"{method.upper()} {path} {code}"
        for path, item in OPENAPI["paths"].items()
        for method, op in item.items()
        for code, response in op.get("responses", {}).items()
        if code[0] in "45" and "content" not in response
    ]
    assert not declared, declared
    too_many = OPENAPI["paths"]["/v1/auth/login"]["post"]["responses"]["429"]
    assert too_many["content"] == error and "Retry-After" in too_many["headers"], too_many
    r = api.get("/v1/me")  # 401: no token
    assert r.status_code == 401 and set(r.json()) == set(schemas["Error"]["properties"]), r.text
    user = api.new_user()
    r = api.post("/v1/portraits", json={"likeness_id": "x", "styles": []}, headers=user.auth)
    assert r.status_code == 422, r.text
    documented = set(schemas["ValidationError"]["properties"])
    assert r.json()["errors"] and all(set(e) == documented for e in r.json()["errors"]), r.text
