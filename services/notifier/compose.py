"""Build the MIME message of one email.

Structure (what every mail client understands):

    multipart/alternative
    ├── text/plain; charset=utf-8
    └── multipart/related
        ├── text/html; charset=utf-8      (refers to images as src="cid:...")
        └── image/png  Content-ID: <...>  (one per inline image)

Non-ASCII subjects and names are RFC 2047 encoded-words in UTF-8 (the stdlib policy does it).
"""

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import cast

_CID_REF = re.compile(r"""["'(]cid:([^"')\s]+)""")


@dataclass(frozen=True)
class InlineImage:
    cid: str  # without angle brackets; the HTML refers to it as "cid:<cid>"
    data: bytes
    subtype: str = "png"
    filename: str | None = None


def new_cid(domain: str = "portrait.studio") -> str:
    return make_msgid(domain=domain)[1:-1]


def message_id_for(event_key: str, domain: str) -> str:
    """The same event always gets the same Message-ID, so a resend after a crash can be
    recognised as a duplicate by the receiving side; the key itself is not revealed."""
    digest = hashlib.sha256(event_key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def sender_domain(sender: str) -> str:
    address = parseaddr(sender)[1]
    if "@" not in address:
        raise ValueError(f"sender {sender!r} has no address with a domain")
    return address.rsplit("@", 1)[1]


def compose_message(
    *,
    sender: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    images: Sequence[InlineImage] = (),
    message_id: str | None = None,
    locale: str | None = None,
) -> EmailMessage:
    """One email with a text and an HTML part; `images` are attached inline to the HTML."""
    referenced = set(_CID_REF.findall(html))
    provided = {image.cid for image in images}
    if referenced != provided:
        raise ValueError(
            f"inline images do not match the HTML: missing {sorted(referenced - provided)}, "
            f"unused {sorted(provided - referenced)}"
        )

    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = Address(addr_spec=to)  # validates the address; refuses header injection
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain=sender_domain(sender))
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies

    msg.set_content(text, subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    if images:
        html_part = cast(list[EmailMessage], msg.get_payload())[1]  # multipart: its parts
        for image in images:
            html_part.add_related(
                image.data,
                maintype="image",
                subtype=image.subtype,
                cid=f"<{image.cid}>",
                filename=image.filename,
                disposition="inline",
            )
    if locale:  # after the bodies: set_content() drops every Content-* header
        msg["Content-Language"] = locale
    return msg
