"""Text from outside made safe to show in the user's terminal.

Log lines, messages, step labels and outputs come from the Ona API or from whoever wrote
a TaskRun. Printed as they are, their escape sequences would be run by the reader's
terminal: clear the screen (`ESC[2J`), retitle the window (`ESC]0;...BEL`), write the
clipboard (OSC 52), or hide a line behind another (`\\r`, backspace). `clean` removes
every such sequence whole (CSI, OSC, DCS and the other ESC forms, in 7-bit and 8-bit C1
form) and every other C0 or C1 control character; newline and tab stay.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

_CONTROLS: Final = re.compile(
    r"""
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]?
        # CSI: parameters, intermediates, final byte
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]) [^\x07\x1b\x9c\n]* (?:\x07|\x1b\\|\x9c)?
        # OSC, DCS, SOS, PM, APC: a string up to BEL or ST; one left open ends with its line
    | \x1b [\x20-\x2f]* [\x30-\x7e]?
        # any other escape sequence (charset, keypad, reset, ...), or a lone ESC
    | [\x00-\x08\x0b-\x1f\x7f-\x9f]
        # any other control character, C0 (but newline and tab), DEL or C1
    """,
    re.VERBOSE,
)
_WHITESPACE: Final = re.compile(r"\s+")


def clean(text: str) -> str:
    """`text` without terminal control sequences or control characters but `\\n` and `\\t`."""
    return _CONTROLS.sub("", text)


def one_line(text: str) -> str:
    """`clean(text)` on one line: runs of whitespace, newlines included, become one space."""
    return _WHITESPACE.sub(" ", clean(text)).strip()


def clean_tree(value: Any) -> Any:
    """A JSON-like value with every string in it, keys too, passed through `clean`."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, Mapping):
        return {clean(str(key)): clean_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [clean_tree(item) for item in value]
    return value
