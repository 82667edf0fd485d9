"""The facts each email template needs, built from plain values (no database, no network).

`tasks.py` fetches rows and objects and calls these; `samples.py` calls them with sample
values. Keys here are exactly the fields the templates use (they fail on a missing one).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.notifier.links import failure_route, web_url
from shared.styles import StyleError, load_styles

DOWNLOAD_DAYS = 7  # S3 signature version 4 allows at most 7 days
INLINE_PICTURES = 6  # the best ones travel inside the mail; the rest are links


@dataclass(frozen=True)
class PortraitItem:
    number: int  # 1-based rank in the set
    style: str  # display name
    url: str  # presigned download
    width: int
    height: int
    src: str | None = None  # inline picture ("cid:..." in a mail, a file in a sample)


def style_name(style_id: str, locale: str = "en") -> str:
    """The display name of a style in `locale` ('golden-park' -> 'Golden park' if the style is gone)."""
    try:
        return load_styles()[style_id].name.get(locale)
    except (KeyError, StyleError):
        return style_id.replace("-", " ").replace("_", " ").capitalize()


def base_data(public_url: str) -> dict[str, Any]:
    return {"home_url": web_url(public_url), "settings_url": web_url(public_url, "account")}


def portraits_ready_data(
    public_url: str,
    job_id: str,
    items: Sequence[PortraitItem],
    expires_at: datetime,
    days: int = DOWNLOAD_DAYS,
) -> dict[str, Any]:
    if not items:
        raise ValueError("a portraits_ready email needs at least one portrait")
    styles = list(dict.fromkeys(item.style for item in items))  # ranked order, no repeats
    images = [{"src": i.src, "url": i.url, "style": i.style, "number": i.number} for i in items if i.src]
    downloads = [
        {"url": i.url, "style": i.style, "number": i.number, "width": i.width, "height": i.height}
        for i in items
    ]
    return {
        **base_data(public_url),
        "count": len(items),
        "styles": styles,
        "images": images,
        "downloads": downloads,
        "expires_at": expires_at,
        "days": days,
        "gallery_url": web_url(public_url, "gallery", job=job_id),
    }


def training_finished_data(public_url: str, photo_count: int) -> dict[str, Any]:
    return {
        **base_data(public_url),
        "photo_count": photo_count,
        "create_url": web_url(public_url, "styles"),
    }


def job_failed_data(
    public_url: str, kind: str, error_code: str | None, error_message: str | None
) -> dict[str, Any]:
    return {
        **base_data(public_url),
        "kind": kind,
        "error_code": error_code,
        "error_message": error_message,
        "studio_url": web_url(public_url, failure_route(kind, error_code)),
    }


def verify_email_data(public_url: str, token: str, hours: int) -> dict[str, Any]:
    return {
        **base_data(public_url),
        "action_url": web_url(public_url, "verify", token=token),
        "hours": hours,
    }


def reset_password_data(public_url: str, token: str, minutes: int) -> dict[str, Any]:
    return {
        **base_data(public_url),
        "action_url": web_url(public_url, "reset", token=token),
        "minutes": minutes,
    }


def signup_existing_data(public_url: str) -> dict[str, Any]:
    return {
        **base_data(public_url),
        "login_url": web_url(public_url, "login"),
        "reset_url": web_url(public_url, "reset"),
    }


def data_erased_data(public_url: str) -> dict[str, Any]:
    return base_data(public_url)
