"""Logging set-up: text or JSON lines, with the API token scrubbed from every record."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Tokens read while running (connections' Secrets): every filter hides them too.
_PROTECTED: list[str] = []


def protect(secret: str) -> None:
    """Hide this secret in every log record from now on."""
    if secret and secret not in _PROTECTED:
        _PROTECTED.append(secret)


class RedactFilter(logging.Filter):
    """Replace any occurrence of a secret in a record's final message, as a last guard."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self._own = [s for s in secrets if s]

    @property
    def _secrets(self) -> list[str]:
        return [*self._own, *_PROTECTED]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in self._secrets):
                for secret in self._secrets:
                    text = text.replace(secret, "***")
                record.exc_info = None
                record.exc_text = text
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry)


def configure(level: str, fmt: str, *secrets: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactFilter(*secrets))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # kopf and httpx are chatty below WARNING about every request.
    for name in ("kopf", "httpx", "httpcore", "aiohttp"):
        logging.getLogger(name).setLevel(max(logging.getLevelName(level), logging.WARNING))
