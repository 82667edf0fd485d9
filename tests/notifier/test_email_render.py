"""Templates and strings: every email renders in every language, escapes data, and the samples
in docs/emails are what the templates make today."""

import io
import re
from datetime import UTC, datetime
from html import escape

import pytest
from PIL import Image

from services.notifier import content
from services.notifier.i18n import EN, KO, LOCALES, Translator, normalize_locale
from services.notifier.render import RESULT_TEMPLATES, TEMPLATES, render_email
from services.notifier.samples import DEFAULT_OUT, sample_data, write_samples


def cid_src(number: int) -> str:
    return f"cid:portrait-{number}@studio.test"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("template", TEMPLATES)
def test_every_email_renders_in_every_language(template, locale):
    email = render_email(template, locale, sample_data(template, cid_src))
    assert email.locale == locale
    assert email.subject and "\n" not in email.subject
    assert f'<html lang="{locale}">' in email.html
    assert f"<title>{escape(email.subject)}</title>" in email.html
    for part in (email.subject, email.text, email.html):
        assert not re.search(r"\{[a-z_]+\}", part), "an unformatted {field} is left"
    assert "</" not in email.text and "<p" not in email.text  # plain text is plain
    footer = "result emails are on" if locale == "en" else "결과 알림 메일"
    assert (footer in email.text) == (template in RESULT_TEMPLATES)


def test_every_english_string_has_a_korean_translation():
    assert sorted(set(EN) - set(KO)) == []


def test_korean_emails_are_in_korean():
    email = render_email("verify_email", "ko-KR", sample_data("verify_email", cid_src))
    assert email.subject == "이메일 주소를 확인해 주세요"
    assert "48시간" in email.text


def test_locale_normalisation():
    assert [normalize_locale(x) for x in ("ko", "ko-KR", "KO_kr", "en-GB", "fr", None, "")] == [
        "ko", "ko", "ko", "en", "en", "en", "en",
    ]  # fmt: skip


def test_plural_forms():
    t = Translator("en")
    assert t("portraits_ready.subject", count=1) == "Your portrait is ready"
    assert t("portraits_ready.subject", count=4) == "Your 4 portraits are ready"
    assert Translator("ko").date(datetime(2026, 12, 8, tzinfo=UTC)) == "2026년 12월 8일"


def test_data_is_escaped_in_html_and_links_are_kept():
    item = content.PortraitItem(
        1, '<script>alert("x")</script>', "https://s3.test/a?b=1&c=2", 512, 768, "cid:a@b"
    )
    data = content.portraits_ready_data("https://studio.test", "job-1", [item], datetime.now(UTC))
    email = render_email("portraits_ready", "en", data)
    assert "<script>" not in email.html
    assert "&lt;script&gt;" in email.html
    assert 'href="https://s3.test/a?b=1&amp;c=2"' in email.html
    assert "https://s3.test/a?b=1&c=2" in email.text  # plain text is not HTML-escaped
    assert "https://studio.test/#/gallery?job=job-1" in email.text


def test_a_missing_field_is_an_error_not_an_empty_string():
    data = sample_data("verify_email", cid_src)
    del data["action_url"]
    with pytest.raises(Exception, match="action_url"):
        render_email("verify_email", "en", data)


def test_failure_email_says_what_to_do():
    data = content.job_failed_data(
        "https://studio.test", "train_likeness", "too_few_photos", "Only 4 photos were usable."
    )
    email = render_email("job_failed", "en", data)
    assert email.subject == "Something went wrong while training your likeness"
    assert "Only 4 photos were usable." in email.text
    assert "Upload a few more photos" in email.text
    assert "https://studio.test/#/photos" in email.text  # where photos are uploaded


def test_unknown_template_is_refused():
    with pytest.raises(ValueError, match="unknown email template"):
        render_email("newsletter", "en", {})


def test_samples_are_written_and_in_sync_with_docs(tmp_path):
    pages = write_samples(tmp_path)
    assert len(pages) == len(TEMPLATES) * len(LOCALES)
    for page in pages:
        html = page.read_text(encoding="utf-8")
        for src in re.findall(r'src="([^"]+)"', html):
            with Image.open(io.BytesIO((tmp_path / src).read_bytes())) as image:
                assert image.format == "PNG" and image.width == 336
        committed = DEFAULT_OUT / page.name
        assert committed.read_text(encoding="utf-8") == html, (
            f"docs/emails/{page.name} is stale: run python -m services.notifier.samples"
        )
