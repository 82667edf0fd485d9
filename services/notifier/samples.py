"""Render every email in every language with sample data into docs/emails/, to look at.

    python -m services.notifier.samples [--out docs/emails]

Inline pictures are written next to the pages (`img/portrait-N.png`, the same thumbnails a
mail carries) and referenced as files instead of `cid:`. The sample person is skimage's
astronaut photo, tinted per style; the links point at example hosts.
"""

import argparse
import io
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from services.notifier import content
from services.notifier.i18n import LOCALES
from services.notifier.render import TEMPLATES, render_email
from services.notifier.thumbnails import inline_thumbnail

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "docs" / "emails"
PUBLIC_URL = "https://studio.example.com"
SAMPLE_USER = "0b7f3c2e-5d1a-4e8b-9c6f-2a4d8e1f7b30"
SAMPLE_JOB = "6e2a9d41-8c3b-4f7e-a5d2-91b0c4e7f863"
SAMPLE_EXPIRY = datetime(2026, 12, 8, 14, 0, tzinfo=UTC)
# (style id, tint) of the 9 sample portraits, ranked.
SAMPLE_SET = [
    ("golden-park", (1.12, 1.0, 0.78)),
    ("black-white", None),
    ("studio-business", (0.9, 0.97, 1.12)),
    ("golden-park", (1.15, 1.02, 0.75)),
    ("black-white", None),
    ("studio-business", (0.88, 0.95, 1.15)),
    ("golden-park", (1.1, 0.98, 0.8)),
    ("black-white", None),
    ("studio-business", (0.92, 0.98, 1.1)),
]


def sample_picture(index: int, tint: tuple[float, float, float] | None) -> bytes:
    """The astronaut portrait, cropped a little differently each time, in the style's colours."""
    from skimage import data

    image = Image.fromarray(data.astronaut()).crop((100 + 6 * index, 0, 390 - 4 * index, 435))
    if index % 2:
        image = ImageOps.mirror(image)
    if tint is None:
        image = ImageOps.autocontrast(ImageOps.grayscale(image), cutoff=1).convert("RGB")
    else:
        pixels = np.asarray(image, dtype=np.float32) * np.asarray(tint, dtype=np.float32)
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sample_items(image_src: Callable[[int], str], locale: str = "en") -> list[content.PortraitItem]:
    items = []
    for number, (style_id, _) in enumerate(SAMPLE_SET, start=1):
        key = f"users/{SAMPLE_USER}/portraits/{SAMPLE_JOB}/portrait-{number}.png"
        url = (
            f"https://s3.example.com/portrait-studio/{key}?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            "&X-Amz-Expires=604800&X-Amz-Signature=sample"
        )
        src = image_src(number) if number <= content.INLINE_PICTURES else None
        items.append(content.PortraitItem(number, content.style_name(style_id, locale), url, 1024, 1536, src))
    return items


def sample_data(template: str, image_src: Callable[[int], str], locale: str = "en") -> dict[str, Any]:
    """Sample facts for `template` as a reader in `locale` gets them (style names); `image_src(n)`
    says where inline picture n is."""
    if template == "portraits_ready":
        items = sample_items(image_src, locale)
        return content.portraits_ready_data(PUBLIC_URL, SAMPLE_JOB, items, SAMPLE_EXPIRY)
    if template == "training_finished":
        return content.training_finished_data(PUBLIC_URL, photo_count=14)
    if template == "job_failed":
        message = "3 of your photos had no clear face, so only 7 were usable; upload 5 more."
        return content.job_failed_data(PUBLIC_URL, "train_likeness", "too_few_photos", message)
    if template == "verify_email":
        return content.verify_email_data(PUBLIC_URL, "sample-token-not-valid", hours=48)
    if template == "reset_password":
        return content.reset_password_data(PUBLIC_URL, "sample-token-not-valid", minutes=30)
    if template == "signup_existing":
        return content.signup_existing_data(PUBLIC_URL)
    if template == "data_erased":
        return content.data_erased_data(PUBLIC_URL)
    raise ValueError(f"no sample data for {template!r}")


def write_samples(out: Path) -> list[Path]:
    """Write every sample page, its plain-text twin, the pictures and an index; return the pages."""
    images = out / "img"
    images.mkdir(parents=True, exist_ok=True)
    for number, (_, tint) in enumerate(SAMPLE_SET[: content.INLINE_PICTURES], start=1):
        picture = inline_thumbnail(sample_picture(number, tint))
        (images / f"portrait-{number}.png").write_bytes(picture)

    pages: list[Path] = []
    rows: list[str] = []
    for template in TEMPLATES:
        cells = []
        for locale in LOCALES:
            email = render_email(template, locale, sample_data(template, _file_src, locale))
            page = out / f"{template}.{locale}.html"
            page.write_text(email.html, encoding="utf-8")
            (out / f"{template}.{locale}.txt").write_text(
                f"Subject: {email.subject}\n\n{email.text}", encoding="utf-8"
            )
            pages.append(page)
            cells.append(
                f'<td><a href="{page.name}">{escape(email.subject)}</a> '
                f'(<a href="{page.stem}.txt">text</a>)</td>'
            )
        rows.append(f"<tr><th>{template}</th>{''.join(cells)}</tr>")
    (out / "index.html").write_text(_INDEX.format(rows="\n".join(rows)), encoding="utf-8")
    return pages


def _file_src(number: int) -> str:
    return f"img/portrait-{number}.png"


_INDEX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Portrait Studio emails</title>
<style>body{{font-family:sans-serif;margin:2rem}}td,th{{padding:.4rem .8rem;text-align:left}}</style>
</head><body>
<h1>Portrait Studio emails (samples)</h1>
<p>Made by <code>python -m services.notifier.samples</code> from the real templates with sample data.</p>
<table><tr><th>email</th><th>English</th><th>한국어</th></tr>
{rows}
</table></body></html>
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for page in write_samples(args.out):
        print(page)


if __name__ == "__main__":
    main()
