"""Logging set-up, and the registry of secrets: text or JSON lines, with every token the
operator holds scrubbed from every record, and `scrub` for what else it shows (log tails,
Event messages)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from datetime import UTC, datetime
from typing import Final

MASK: Final = "***"
# A cut text that ends with this many characters of a secret's start is taken to end with
# the secret (fewer would mask ordinary words; tokens are long and random).
MIN_PARTIAL: Final = 6

# Secrets the operator holds, each with the monotonic time after which it is no longer
# hidden (None: never). Replaced, never changed in place: logging filters read it from
# other threads.
_PROTECTED: tuple[tuple[str, float | None], ...] = ()


def protect(secret: str, *, lifetime: float | None = None) -> None:
    """Hide this secret in every log record and every `scrub` from now on, or for
    `lifetime` seconds (a logs token, say, that will not outlive its hour)."""
    global _PROTECTED
    if not secret:
        return
    now = time.monotonic()
    until = None if lifetime is None else now + lifetime
    kept = [(s, u) for s, u in _PROTECTED if s != secret and (u is None or u > now)]
    old = [u for s, u in _PROTECTED if s == secret]
    if old and (old[0] is None or (until is not None and old[0] > until)):
        until = old[0]  # never shorten what was asked before
    _PROTECTED = (*kept, (secret, until))


def protected() -> list[str]:
    """The secrets hidden now, longest first (so none is masked only in part because a
    shorter one inside it went first)."""
    now = time.monotonic()
    found = {s for s, until in _PROTECTED if until is None or until > now}
    return sorted(found, key=len, reverse=True)


def scrub(text: str, *, cut: bool = False, extra: tuple[str, ...] = ()) -> str:
    """`text` with every protected secret (and every one in `extra`) masked.

    `cut`: the text was cut right after its end, so a secret may have lost its end there:
    an ending that is the start of a secret (at least `MIN_PARTIAL` characters of it, or
    the whole of a shorter one) is masked too."""
    secrets = sorted({*protected(), *(s for s in extra if s)}, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    if cut:
        for secret in secrets:
            for size in range(len(secret) - 1, min(MIN_PARTIAL, len(secret)) - 1, -1):
                if text.endswith(secret[:size]):
                    text = text[:-size] + MASK
                    break
    return text


# C0 controls but tab and newline, DEL and C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


class RedactFilter(logging.Filter):
    """Replace any occurrence of a secret in a record's final message, as a last guard."""

    def __init__(self, *secrets: str) -> None:
        super().__init__()
        self._own = [s for s in secrets if s]

    @property
    def _secrets(self) -> list[str]:
        return [*self._own, *protected()]

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets
        message = record.getMessage()
        if any(s in message for s in secrets):
            for secret in secrets:
                message = message.replace(secret, MASK)
            record.msg, record.args = message, None
        if _CONTROL.search(message):
            # A task's text (a failure message, a step name) may carry terminal escape
            # sequences: shown escaped, never acted on by whoever reads the log.
            record.msg, record.args = _CONTROL.sub(_escape, message), None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(s in text for s in secrets):
                for secret in secrets:
                    text = text.replace(secret, MASK)
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
    for secret in secrets:
        protect(secret)  # the operator's own token: out of tails and Events too
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
