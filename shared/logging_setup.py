"""JSON logs carrying job and user ids (pass them with `extra={"job_id": ..., "user_id": ...}`).

Every line goes through `RedactSecrets` first: tokens in URLs (the event stream's `?access_token=`,
emailed links' `token=`) and `Bearer` credentials never reach a log, uvicorn's access log included.
"""

import logging
import re
import sys

from pythonjsonlogger.json import JsonFormatter

from shared.config import get_settings

# `access_token=...`, `refresh_token=...`, `token=...` in a query string or text, and `Bearer ...`.
_SECRET = re.compile(r"(?i)(\b(?:access_token|refresh_token|token)=|\bBearer\s+)[^\s&\"']+")


def redact(text: str) -> str:
    """`text` with every token value replaced by `[redacted]` (the parameter name stays)."""
    return _SECRET.sub(r"\1[redacted]", text)


class RedactSecrets(logging.Filter):
    """A handler filter: rewrites a record whose formatted message carries a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def configure_logging(service: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if get_settings().log_json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "asctime": "time"},
                static_fields={"service": service},
            )
        )
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("pgserver", "botocore", "urllib3", "httpx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
