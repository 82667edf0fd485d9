"""Fixtures of the notifier tests: real aiosmtpd servers on free ports."""

from collections.abc import Callable, Iterator

import pytest

from tests.notifier.mailserver import Certificate, MailServer, make_certificate, start_server


@pytest.fixture
def start_mail_server() -> Iterator[Callable[..., MailServer]]:
    """Start as many servers as a test needs; all are stopped after it."""
    servers: list[MailServer] = []

    def start(*args: object, **kwargs: object) -> MailServer:
        server = start_server(*args, **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.controller.stop()


@pytest.fixture
def mail_server(start_mail_server: Callable[..., MailServer]) -> MailServer:
    return start_mail_server()


@pytest.fixture(scope="session")
def tls_certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    certificate = make_certificate(tmp_path_factory.mktemp("tls"))
    if certificate is None:
        # A skip would hide untested TLS paths (`make test` installs openssl with its system-deps).
        pytest.fail("the openssl command is needed to make a test certificate: "
                    "apt-get install -y openssl", pytrace=False)  # fmt: skip
    return certificate
