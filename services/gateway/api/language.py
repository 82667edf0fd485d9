"""The language of each answer: `Accept-Language` (RFC 9110 §12.5.4) picks English or Korean for the
sentences a person reads (shared/i18n.py); `?lang=` does the same where a client cannot send
headers (EventSource, on the event stream).

A route refuses with `Refusal(status, key, **values)`: `detail` is the catalogue's sentence in the
request's language. Every other HTTPException keeps its own text.
"""

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.i18n import Sentence, current_locale, negotiate


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


def install_languages(app: FastAPI) -> None:
    """Answer in the request's language: the middleware and the handler of `Refusal`s."""
    app.add_middleware(LocaleMiddleware)
    app.add_exception_handler(Refusal, refusal)
