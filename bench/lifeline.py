"""How a bench child process (stand-in, floor) knows to stop: SIGTERM/SIGINT, or the end of its standard input.

`run.py` keeps a pipe to each child's standard input: if the bench dies, the pipe closes and the child stops too.
Kept apart from the children's own modules so that the floor imports nothing it does not need (its RSS is measured).
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys


def stdin_is_pipe() -> bool:
    """Whether standard input is a pipe (whose end tells us that whoever started us is gone)."""
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
        return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
    except (OSError, ValueError, AttributeError):
        return False


class Lifeline:
    """`stop` is set on SIGTERM/SIGINT and, with `watch_stdin`, when standard input closes."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self._stdin: asyncio.Task[None] | None = None

    async def start(self, *, watch_stdin: bool = True) -> None:
        """Install the signal handlers and, if stdin is a pipe (not a terminal or /dev/null), watch it."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop.set)
        if watch_stdin and stdin_is_pipe():
            reader = asyncio.StreamReader()
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

            async def until_eof() -> None:
                await reader.read()  # EOF: whoever started us is gone
                self.stop.set()

            self._stdin = asyncio.create_task(until_eof())

    async def wait(self, max_seconds: float) -> None:
        """Until told to stop, or `max_seconds` at most."""
        try:
            await asyncio.wait_for(self.stop.wait(), timeout=max_seconds)
        except TimeoutError:
            pass
        finally:
            if self._stdin is not None:
                self._stdin.cancel()
