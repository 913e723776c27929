"""How a cut log line says it was cut: pure text, shared by the Ona client that cuts
lines as it reads a log and the log tail that keeps the last of them."""

from __future__ import annotations

import re
from typing import Final

_CUT: Final = re.compile(r"… \[line cut: (\d+) bytes\]\Z")


def cut_line(head: str, dropped: int) -> str:
    """A line of which only `head` is kept, `dropped` bytes of it left out."""
    return f"{head}… [line cut: {dropped} bytes]"


def split_cut(line: str) -> tuple[str, int]:
    """The kept start of a cut line and how many bytes were left out (0: not cut)."""
    match = _CUT.search(line)
    if match is None:
        return line, 0
    return line[: match.start()], int(match[1])
