"""Helpers for the notifier tests: a recording aiosmtpd handler, servers, a test certificate."""

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    auth_user: str | None

    def parse(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


@dataclass
class RecordingHandler:
    """Keeps every accepted message; answers `refuse_reply` to the first `refuse` DATA commands."""

    refuse: int = 0
    refuse_reply: str = "451 4.3.0 Mailbox busy, try again later"
    attempts: int = 0
    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        self.attempts += 1
        if self.attempts <= self.refuse:
            return self.refuse_reply
        user = session.auth_data.login.decode() if session.auth_data else None
        self.messages.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content, user)
        )
        return "250 2.0.0 OK queued"


@dataclass
class MailServer:
    handler: RecordingHandler
    host: str
    port: int
    controller: Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(handler: RecordingHandler | None = None, **smtp_kwargs: object) -> MailServer:
    """A real aiosmtpd server on a free port (stop it with `server.controller.stop()`)."""
    handler = handler or RecordingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_kwargs)
    controller.start()
    return MailServer(handler, "127.0.0.1", port, controller)


@dataclass
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_certificate(folder: Path) -> Certificate | None:
    """A self-signed certificate for 127.0.0.1 (None without the openssl command)."""
    if shutil.which("openssl") is None:
        return None
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return Certificate(cert, key)


def password_authenticator(username: str, password: str) -> Callable[..., AuthResult]:
    def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:  # noqa: ANN001
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == username
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return authenticate
