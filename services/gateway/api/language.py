"""The language of each answer: `Accept-Language` (RFC 9110 §12.5.4) picks English or Korean for the
sentences a person reads (shared/i18n.py); `?lang=` does the same where a client cannot send
headers (EventSource, on the event stream).

A route refuses with `Refusal(status, key, **values)`: `detail` is the catalogue's sentence in the
request's language. HTTP's own refusals raised by Starlette's routing (404 for an unknown address, 405
for a method the route does not take) get the catalogue's `http.404` / `http.405` sentence too.
"""

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.i18n import Sentence, current_locale, negotiate, say


class Refusal(HTTPException):
    """An HTTP error whose sentence comes from the catalogue (`key`, `values`); `detail` holds the
    English text for logs and for code that reads it."""

    def __init__(self, status_code: int, key: str, headers: dict[str, str] | None = None, **values: Any):
        self.sentence = Sentence(key, values)
        super().__init__(status_code, self.sentence.render(), headers=headers)


def request_locale(scope: Scope) -> str:
    """`?lang=ko` if given (any of shared.i18n.LOCALES), else the `Accept-Language` header's best."""
    query = scope.get("query_string", b"").decode("latin-1")
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "lang" and value:
            return negotiate(value)
    for name, value in scope.get("headers", ()):
        if name == b"accept-language":
            return negotiate(value.decode("latin-1"))
    return negotiate(None)


class LocaleMiddleware:
    """Sets shared.i18n.current_locale for the request (a pure ASGI middleware: it streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token = current_locale.set(request_locale(scope))
        try:
            await self.app(scope, receive, send)
        finally:
            current_locale.reset(token)


def in_language(sentence: Sentence) -> str:
    """The sentence in the language of the request being answered."""
    return sentence.render(current_locale.get())


async def refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refusal)
    return JSONResponse(
        {"detail": in_language(exc.sentence)}, status_code=exc.status_code, headers=exc.headers
    )


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own HTTPExceptions (its detail is the status phrase, "Not Found") in words of the
    catalogue, in the request's language; FastAPI's handler answers (no body for 204/304)."""
    assert isinstance(exc, StarletteHTTPException)
    locale = current_locale.get()
    headers = exc.headers
    if exc.status_code == 404:
        detail = say("http.404", locale)
    elif exc.status_code == 400 and exc.detail == BODY_PARSE_ERROR:
        detail = say("http.body_unreadable", locale)
    elif exc.status_code == 405:
        allowed = allowed_methods(request) or (headers or {}).get("Allow", "")
        detail = say("http.405", locale, method=request.method, allowed=allowed)
        headers = {**(headers or {}), "Allow": allowed}
    else:
        detail = say("http.other", locale, status=exc.status_code)
    localized = StarletteHTTPException(exc.status_code, detail, headers=headers)
    return await http_exception_handler(request, localized)


METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")
# FastAPI's detail for a body it could not decode at all (not UTF-8, nested too deep, a broken form)
BODY_PARSE_ERROR = "There was an error parsing the body"


def allowed_methods(request: Request) -> str:
    """Every method some route takes at this address, e.g. "DELETE, GET, PATCH" for /v1/me.
    Starlette's 405 names only the first route whose path matched (its `Allow` says "GET" alone
    where GET, PATCH and DELETE are separate routes); RFC 9110 §15.5.6 wants all of them. Asks
    the routes themselves (`BaseRoute.matches`) with each method, so included routers count too."""
    allowed = []
    for method in METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    return ", ".join(allowed)


def install_languages(app: FastAPI) -> None:
    """Answer in the request's language: the middleware, the handler of `Refusal`s and of
    Starlette's own 404/405."""
    app.add_middleware(LocaleMiddleware)
    app.add_exception_handler(Refusal, refusal)
    app.add_exception_handler(StarletteHTTPException, http_error)
