"""JSON logs carrying job and user ids (pass them with `extra={"job_id": ..., "user_id": ...}`).

Every line goes through `RedactSecrets` first: tokens in URLs (the event stream's `?access_token=`,
emailed links' `token=`) and `Bearer` credentials never reach a log, uvicorn's access log included.
"""

import logging
import logging.config
import re
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from shared.config import get_settings

# `access_token=...`, `refresh_token=...`, `token=...` in a query string or text, and `Bearer ...`.
_SECRET = re.compile(r"(?i)(\b(?:access_token|refresh_token|token)=|\bBearer\s+)[^\s&\"']+")


_NOISY = ("pgserver", "botocore", "urllib3", "httpx", "PIL")  # INFO lines nobody reads


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


def log_handler(service: str) -> logging.Handler:
    """The one handler every process logs through: stderr, JSON lines (setting `log_json`) or plain
    text, with secrets redacted."""
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
    return handler


def logging_config(service: str, level: int = logging.INFO) -> dict[str, Any]:
    """The logging setup as a `logging.config.dictConfig` dict: only strings, so it pickles into
    processes that are spawned rather than forked. uvicorn applies it (`log_config=`) in every worker
    process of `studio gateway --workers N`, which start without the parent's handlers."""
    return {
        "version": 1,
        "disable_existing_loggers": False,  # uvicorn's and libraries' loggers exist already
        "handlers": {"default": {"()": f"{__name__}.log_handler", "service": service}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {noisy: {"level": "WARNING"} for noisy in _NOISY},
    }


def configure_logging(service: str, level: int = logging.INFO) -> None:
    """Route every logger of this process through `log_handler` (replacing the root's handlers)."""
    logging.config.dictConfig(logging_config(service, level))
