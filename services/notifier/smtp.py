"""Send one message over SMTP: plain, STARTTLS or implicit TLS, optional login, and retries.

Transient failures (4xx replies, dropped or refused connections, timeouts) are retried with
exponential backoff and jitter; permanent ones (5xx replies, TLS or login misconfiguration)
raise at once. Either way the caller gets an `SmtpSendError` carrying the server's reply.
"""

import logging
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Literal

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from shared.config import Settings

log = logging.getLogger(__name__)

Security = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: Security = "none"
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    attempts: int = 5
    backoff_seconds: float = 2.0  # first wait; doubles each time (plus jitter)
    backoff_max_seconds: float = 60.0
    ssl_context: ssl.SSLContext | None = None  # None: verify against the system's CAs

    @classmethod
    def from_settings(cls, settings: Settings) -> "SmtpConfig":
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
            attempts=settings.smtp_attempts,
            backoff_seconds=settings.smtp_backoff_seconds,
            backoff_max_seconds=settings.smtp_backoff_max_seconds,
        )


class SmtpSendError(Exception):
    """The message was not sent. `code` is the SMTP reply code, None without a reply."""

    def __init__(self, message: str, *, code: int | None, transient: bool, attempts: int):
        super().__init__(message)
        self.code = code
        self.transient = transient
        self.attempts = attempts


def reply_of(exc: BaseException) -> tuple[int | None, str]:
    """The SMTP reply code and text behind an smtplib exception (None, str(exc) otherwise)."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, text = next(iter(exc.recipients.values()))
        return code, _text(text)
    if isinstance(exc, smtplib.SMTPResponseException):
        return exc.smtp_code, _text(exc.smtp_error)
    return None, str(exc) or type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    # smtplib's exceptions are OSErrors: classify them before the generic network case.
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return True
    if isinstance(exc, (smtplib.SMTPException, ssl.SSLError)):
        return False  # e.g. STARTTLS not offered, certificate rejected: configuration errors
    return isinstance(exc, OSError)  # refused connection, reset, timeout, DNS


def send_message(msg: EmailMessage, config: SmtpConfig) -> int:
    """Send `msg` to its To/Cc recipients; return how many attempts it took."""
    retrying = Retrying(
        stop=stop_after_attempt(config.attempts),
        wait=wait_exponential_jitter(
            initial=config.backoff_seconds,
            max=config.backoff_max_seconds,
            jitter=config.backoff_seconds,
        ),
        retry=retry_if_exception(is_transient),
        before_sleep=_log_retry,
        reraise=True,
    )
    attempts = 0
    try:
        for attempt in retrying:
            with attempt:
                attempts = attempt.retry_state.attempt_number
                _send_once(msg, config)
    except (OSError, smtplib.SMTPException) as exc:
        code, text = reply_of(exc)
        transient = is_transient(exc)
        where = f"{config.host}:{config.port}"
        if code is not None:
            message = f"The mail server {where} answered {code} {text}"
        elif not transient:  # e.g. SMTPNotSupportedError: the address needs SMTPUTF8 (RFC 6531)
            message = f"The mail server {where} cannot take this message: {text}"
        else:
            message = f"Could not talk to the mail server {where}: {text}"
        if transient:
            message += f" (gave up after {attempts} attempts)"
        raise SmtpSendError(message, code=code, transient=transient, attempts=attempts) from exc
    return attempts


def _send_once(msg: EmailMessage, config: SmtpConfig) -> None:
    client: smtplib.SMTP
    if config.security == "ssl":
        client = smtplib.SMTP_SSL(
            config.host, config.port, timeout=config.timeout, context=_tls_context(config)
        )
    else:
        client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
    with client:
        client.ehlo()
        if config.security == "starttls":
            client.starttls(context=_tls_context(config))
            client.ehlo()
        if config.username:
            client.login(config.username, config.password or "")
        client.send_message(msg)


def _tls_context(config: SmtpConfig) -> ssl.SSLContext:
    return config.ssl_context or ssl.create_default_context()  # loads the system CAs: TLS only


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    code, text = reply_of(exc) if exc else (None, "")
    log.warning(
        "smtp attempt %d failed (%s %s); retrying in %.1f s",
        state.attempt_number,
        code if code is not None else "-",
        text,
        state.next_action.sleep if state.next_action else 0.0,
    )


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
