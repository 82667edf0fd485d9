"""compose.py + smtp.py against a real SMTP server (aiosmtpd): structure, encoding, retries, TLS."""

import io
import re

import pytest
from PIL import Image

from services.notifier.compose import InlineImage, compose_message, message_id_for, new_cid
from services.notifier.smtp import SmtpConfig, SmtpSendError, send_message
from tests.notifier.mailserver import RecordingHandler, free_port, password_authenticator

SENDER = "Portrait Studio <portraits@studio.test>"


def png(width: int, height: int, colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def config_for(server, **overrides) -> SmtpConfig:  # noqa: ANN001
    values = {
        "host": server.host,
        "port": server.port,
        "timeout": 5.0,
        "attempts": 4,
        "backoff_seconds": 0.01,
        "backoff_max_seconds": 0.05,
    }
    return SmtpConfig(**{**values, **overrides})


def simple_message(to: str = "user@example.test", subject: str = "Hello") -> object:
    return compose_message(sender=SENDER, to=to, subject=subject, text="hi", html="<p>hi</p>")


def test_html_with_inline_images_arrives_as_alternative_of_text_and_related_html(mail_server):
    images = [
        InlineImage(new_cid(), png(40, 60, (200, 10, 10))),
        InlineImage(new_cid(), png(30, 30, (10, 10, 200))),
    ]
    html = "".join(f'<img src="cid:{image.cid}">' for image in images)
    msg = compose_message(
        sender=SENDER,
        to="ana@example.test",
        subject="Your portraits",
        text="See the pictures.",
        html=html,
        images=images,
        locale="en",
        message_id=message_id_for("job:1:portraits_ready", "studio.test"),
    )
    assert send_message(msg, config_for(mail_server)) == 1

    [received] = mail_server.handler.messages
    assert received.rcpt_tos == ["ana@example.test"]
    assert received.mail_from == "portraits@studio.test"
    parsed = received.parse()
    assert parsed.get_content_type() == "multipart/alternative"
    text_part, related = parsed.get_payload()
    assert text_part.get_content_type() == "text/plain"
    assert text_part.get_content().strip() == "See the pictures."
    assert related.get_content_type() == "multipart/related"
    html_part, *image_parts = related.get_payload()
    assert html_part.get_content_type() == "text/html"
    assert [p.get_content_type() for p in image_parts] == ["image/png", "image/png"]
    referenced = re.findall(r'src="cid:([^"]+)"', html_part.get_content())
    for cid, part, (width, height) in zip(referenced, image_parts, [(40, 60), (30, 30)], strict=True):
        assert part["Content-ID"] == f"<{cid}>"
        assert part.get_content_disposition() == "inline"
        image = Image.open(io.BytesIO(part.get_content()))
        assert image.format == "PNG" and image.size == (width, height)
    assert parsed["Message-ID"] == message_id_for("job:1:portraits_ready", "studio.test")
    assert parsed["Auto-Submitted"] == "auto-generated"


def test_korean_subject_and_body_are_encoded_as_utf8(mail_server):
    subject = "인물 사진 12장이 완성되었습니다"
    msg = compose_message(
        sender="포트레이트 스튜디오 <portraits@studio.test>",
        to="min@example.test",
        subject=subject,
        text="안녕하세요. 사진이 준비되었습니다.",
        html="<p>안녕하세요.</p>",
        locale="ko",
    )
    send_message(msg, config_for(mail_server))

    [received] = mail_server.handler.messages
    headers = received.data.split(b"\r\n\r\n", 1)[0]
    headers.decode("ascii")  # no raw 8-bit bytes in any header
    raw_subject = re.search(rb"^Subject: (.*(?:\r\n[ \t].*)*)", headers, re.M).group(1)
    assert raw_subject.lower().startswith(b"=?utf-8?")
    parsed = received.parse()
    assert parsed["Subject"] == subject
    assert parsed["From"].addresses[0].display_name == "포트레이트 스튜디오"
    assert parsed["Content-Language"] == "ko"
    assert parsed.get_body(("plain",)).get_content().strip() == "안녕하세요. 사진이 준비되었습니다."


def test_images_must_match_the_cids_the_html_uses():
    image = InlineImage("one@studio.test", png(4, 4, (0, 0, 0)))
    with pytest.raises(ValueError, match="missing"):
        compose_message(
            sender=SENDER,
            to="a@example.test",
            subject="s",
            text="t",
            html='<img src="cid:two@studio.test">',
            images=[image],
        )
    with pytest.raises(ValueError, match="unused"):
        compose_message(
            sender=SENDER,
            to="a@example.test",
            subject="s",
            text="t",
            html="<p>no images</p>",
            images=[image],
        )


def test_header_injection_is_refused():
    with pytest.raises(ValueError):
        simple_message(to="a@example.test\r\nBcc: eve@example.test")
    with pytest.raises(ValueError):
        simple_message(subject="Hi\r\nBcc: eve@example.test")


def test_server_that_refuses_twice_then_accepts_gets_one_message(start_mail_server):
    server = start_mail_server(RecordingHandler(refuse=2))
    assert send_message(simple_message(), config_for(server)) == 3
    assert server.handler.attempts == 3
    assert len(server.handler.messages) == 1


def test_permanent_refusal_raises_at_once_with_the_server_reply(start_mail_server):
    server = start_mail_server(RecordingHandler(refuse=99, refuse_reply="550 5.7.1 Relaying denied"))
    with pytest.raises(SmtpSendError) as caught:
        send_message(simple_message(), config_for(server))
    assert caught.value.code == 550 and not caught.value.transient
    assert caught.value.attempts == 1 and server.handler.attempts == 1
    assert "550 5.7.1 Relaying denied" in str(caught.value)


def test_transient_refusals_give_up_after_the_configured_attempts(start_mail_server):
    server = start_mail_server(RecordingHandler(refuse=99))
    with pytest.raises(SmtpSendError) as caught:
        send_message(simple_message(), config_for(server, attempts=3))
    assert caught.value.code == 451 and caught.value.transient
    assert server.handler.attempts == 3
    assert "451" in str(caught.value) and "after 3 attempts" in str(caught.value)
    assert server.handler.messages == []


def test_no_server_listening_is_a_retried_connection_error(mail_server):
    with pytest.raises(SmtpSendError) as caught:
        send_message(simple_message(), config_for(mail_server, port=free_port(), attempts=2))
    assert caught.value.code is None and caught.value.transient and caught.value.attempts == 2


def starttls_login(start_mail_server, tls_certificate, password: str):  # noqa: ANN001, ANN201
    """A server that requires STARTTLS and the login studio/s3cret, and a config that logs in
    as studio with `password`."""
    server = start_mail_server(
        tls_context=tls_certificate.server_context(),
        require_starttls=True,
        auth_required=True,
        authenticator=password_authenticator("studio", "s3cret"),
    )
    config = config_for(
        server,
        security="starttls",
        username="studio",
        password=password,
        ssl_context=tls_certificate.client_context(),
    )
    return server, config


def test_starttls_with_login(start_mail_server, tls_certificate):
    server, config = starttls_login(start_mail_server, tls_certificate, "s3cret")
    send_message(simple_message(), config)
    [received] = server.handler.messages
    assert received.auth_user == "studio"


def test_wrong_password_is_permanent(start_mail_server, tls_certificate):
    server, config = starttls_login(start_mail_server, tls_certificate, "wrong")
    with pytest.raises(SmtpSendError) as caught:
        send_message(simple_message(), config)
    assert caught.value.code == 535 and caught.value.attempts == 1
    assert server.handler.messages == []


def test_untrusted_certificate_is_refused(start_mail_server, tls_certificate):
    server = start_mail_server(tls_context=tls_certificate.server_context(), require_starttls=True)
    with pytest.raises(SmtpSendError) as caught:
        send_message(simple_message(), config_for(server, security="starttls"))  # system CAs
    assert not caught.value.transient and caught.value.attempts == 1
    assert server.handler.messages == []


def test_implicit_tls(start_mail_server, tls_certificate):
    server = start_mail_server(ssl_context=tls_certificate.server_context())
    config = config_for(server, security="ssl", ssl_context=tls_certificate.client_context())
    send_message(simple_message(), config)
    assert len(server.handler.messages) == 1
