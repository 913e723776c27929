"""Where everything `kubectl ona` prints goes, and how it ends when no one reads any more.

Text for people (log lines, summaries, notes, errors) is passed through `terminal.clean`
on its way out; `-o json|yaml` documents are printed as they are, their escaping already
keeps them inert. When the reader of stdout (or stderr) goes away, as `| head -1` does
once it has its line, the next write raises `OutputClosed` and the command ends quietly
with exit code 0, as kubectl does. While a log is followed, the output may stay idle for
long: `until_reader_leaves` notices the reader leaving a pipe without waiting for the
next line.
"""

from __future__ import annotations

import asyncio
import os
import select
import stat
from collections.abc import Awaitable
from contextlib import suppress
from typing import Any, Final, TextIO, TypeVar

from ..rules.terminal import clean, one_line

PROG: Final = "kubectl ona"
T = TypeVar("T")


class OutputClosed(Exception):
    """Whoever read the output is gone: the command ends, quietly, with exit code 0.

    Not an OSError, so that no handler of network or file errors takes it for one.
    """


class Printer:
    """stdout for results, stderr for notes and errors; every write flushed."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out = out
        self.err = err

    def lines(self, text: str) -> None:
        """Text for people, control sequences removed; a newline is added."""
        self._write(self.out, clean(text) + "\n")

    def document(self, text: str) -> None:
        """Machine output (JSON, YAML), exactly as given."""
        self._write(self.out, text + "\n")

    def note(self, text: str) -> None:
        self._write(self.err, f"{PROG}: {one_line(text)}\n")

    def error(self, text: str) -> None:
        self._write(self.err, f"error: {one_line(text)}\n")

    @staticmethod
    def _write(stream: TextIO, text: str) -> None:
        try:
            stream.write(text)
            stream.flush()
        except BrokenPipeError:
            raise OutputClosed from None


def _descriptor(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _reader_gone(fd: int) -> bool:
    """Whether `fd` is a pipe or socket with no one left at the other end."""
    if not hasattr(select, "poll"):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    try:
        ready = poller.poll(0)
    except OSError:
        return False
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in ready)


def silence_closed(*streams: TextIO) -> None:
    """Point each stream whose reader is gone at /dev/null: Python flushes stdout and
    stderr again at exit, and would report that broken pipe and exit with 120."""
    for stream in streams:
        fd = _descriptor(stream)
        if fd is None or not _reader_gone(fd):
            continue
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


async def until_reader_leaves(work: Awaitable[T], out: TextIO) -> T:
    """`work`'s result; OutputClosed as soon as the reader of the pipe `out` leaves.

    Only for reading and printing: a command that changes something is never cut short
    because its output has no reader. When `out` is not a pipe, or the platform cannot
    tell, the reader leaving is seen at the next write as usual.
    """
    task = asyncio.ensure_future(work)
    fd = _descriptor(out)
    if fd is None or not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return await task
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        # A pipe's write end is never readable: epoll reports the error of a pipe with no
        # reader as both. Anything else (a FIFO opened for both) stops the watch instead
        # of firing again and again.
        loop.remove_reader(fd)
        if _reader_gone(fd) and not gone.done():
            gone.set_result(None)

    try:
        loop.add_reader(fd, readable)
    except (OSError, ValueError, NotImplementedError):
        return await task
    try:
        either: set[asyncio.Future[Any]] = {task, gone}
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await task
        raise OutputClosed
    finally:
        loop.remove_reader(fd)
        if not task.done():
            task.cancel()
