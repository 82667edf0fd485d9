"""Template name + locale + data -> subject, plain text and HTML.

Each `templates/<name>.html.j2` sets `subject`, `heading` and `preheader` at its top level;
its `<name>.txt.j2` twin renders the plain-text part from the same data. The data carries no
words, only facts (counts, names, URLs); every sentence comes from `i18n.py`.
"""

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notifier.i18n import Translator
from shared.contracts.send_email import RESULT_TEMPLATES, Template

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"

TEMPLATES: tuple[str, ...] = tuple(Template)  # the mails of shared/contracts/send_email.py


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str
    locale: str


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,  # a missing field is a bug, not an empty string
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["underline"] = underline
    return env


def underline(text: str, char: str = "=") -> str:
    """A rule as wide as `text` in a monospace font (Hangul is two columns wide)."""
    width = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return char * width


def render_email(template: str, locale: str | None, data: Mapping[str, Any]) -> RenderedEmail:
    """Render one email. `data` needs `home_url`, `settings_url` and the template's fields."""
    if template not in TEMPLATES:
        raise ValueError(f"unknown email template {template!r}; known: {', '.join(TEMPLATES)}")
    t = Translator(locale)
    context = {**data, "t": t, "locale": t.locale, "results_email": template in RESULT_TEMPLATES}
    env = environment()
    html_module = env.get_template(f"{template}.html.j2").make_module(context)
    text = env.get_template(f"{template}.txt.j2").render(context)
    return RenderedEmail(
        subject=str(html_module.subject).strip(),
        text=_tidy_text(text),
        html=str(html_module),
        locale=t.locale,
    )


def _tidy_text(text: str) -> str:
    """Collapse the blank-line runs that template tags leave behind."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    tidy: list[str] = []
    for line in lines:
        if line or (tidy and tidy[-1]):
            tidy.append(line)
    return "\n".join(tidy) + "\n"
