"""Logging: the API token is scrubbed from every record whatever carries it, and the
JSON format writes one object per line."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from ona_taskrun.observability.logs import JsonFormatter, RedactFilter

TOKEN = "ona_pat_Zx9s3cr3tT0k3n"


@pytest.fixture
def logger() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactFilter(TOKEN))
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("tests.unit.logs")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log, stream, handler
    log.removeHandler(handler)


def _raise_with_token() -> None:
    try:
        raise ConnectionError(f"upstream echoed Authorization: Bearer {TOKEN}")
    except ConnectionError as exc:
        raise RuntimeError(f"call failed for {TOKEN}") from exc


@pytest.mark.parametrize(
    ("msg", "args", "visible"),
    [
        pytest.param(f"token is {TOKEN}", (), "token is ***", id="in-message"),
        pytest.param(
            "header %s sent", (f"Bearer {TOKEN}",), "header Bearer *** sent", id="in-args"
        ),
        pytest.param("%s-%s", (TOKEN, TOKEN), "***-***", id="twice"),
        pytest.param("dict %r", ({"auth": TOKEN},), "dict {'auth': '***'}", id="in-repr-arg"),
        pytest.param("nothing secret %d", (7,), "nothing secret 7", id="untouched"),
    ],
)
def test_token_scrubbed_from_message_and_args(
    logger: tuple[logging.Logger, io.StringIO, logging.Handler],
    msg: str,
    args: tuple[object, ...],
    visible: str,
) -> None:
    log, stream, _ = logger
    log.warning(msg, *args)
    text = stream.getvalue()
    assert text == f"WARNING {visible}\n"
    assert TOKEN not in text


def test_token_scrubbed_from_exception_text(
    logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    log, stream, _ = logger
    try:
        _raise_with_token()
    except RuntimeError:
        log.exception("reconcile failed")
    text = stream.getvalue()
    assert text.startswith("ERROR reconcile failed\n")
    assert "Traceback" in text
    assert "call failed for ***" in text
    assert "Bearer ***" in text
    assert TOKEN not in text


def test_scrubbing_holds_for_every_handler_even_if_another_formatted_first(
    logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    log, stream, _ = logger
    plain = io.StringIO()
    early = logging.StreamHandler(plain)
    early.setFormatter(logging.Formatter("%(message)s"))
    # A handler without the filter, added first, caches exc_text with the token in it.
    log.handlers.insert(0, early)
    try:
        try:
            _raise_with_token()
        except RuntimeError:
            log.exception("failed")
    finally:
        log.removeHandler(early)
    assert TOKEN in plain.getvalue()  # that handler had no filter: the guard is per handler
    assert TOKEN not in stream.getvalue()
    assert "call failed for ***" in stream.getvalue()


def test_empty_secret_scrubs_nothing(
    logger: tuple[logging.Logger, io.StringIO, logging.Handler],
) -> None:
    log, stream, handler = logger
    handler.filters.clear()
    handler.addFilter(RedactFilter("", TOKEN))
    log.info("plain text")
    assert stream.getvalue() == "INFO plain text\n"


def test_json_lines(logger: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    log, stream, handler = logger
    handler.setFormatter(JsonFormatter())
    log.info("started %s", "exec-1")
    log.warning("two\nlines with %s", TOKEN)
    try:
        _raise_with_token()
    except RuntimeError:
        log.error("failed", exc_info=True)

    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    entries = [json.loads(line) for line in lines]
    assert [(e["level"], e["message"]) for e in entries] == [
        ("info", "started exec-1"),
        ("warning", "two\nlines with ***"),
        ("error", "failed"),
    ]
    assert all(e["logger"] == "tests.unit.logs" for e in entries)
    assert all(e["time"].endswith("+00:00") for e in entries)
    assert "exception" not in entries[0]
    assert "call failed for ***" in entries[2]["exception"]
    assert TOKEN not in stream.getvalue()


def test_terminal_escape_sequences_in_a_log_record_are_shown_escaped() -> None:
    record = logging.LogRecord(
        "ona_taskrun.controller.reconciler",
        logging.INFO,
        __file__,
        1,
        "failed: %s",
        ("a\x1b[2Jb\x9bc\td",),
        None,
    )
    assert RedactFilter().filter(record)
    assert record.getMessage() == "failed: a\\x1b[2Jb\\x9bc\td"
