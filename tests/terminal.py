"""A command run on a pseudo-terminal, as a person at a terminal runs it."""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import termios
import threading
import time

from libs.tools.servers import child_env


def _take_terminal() -> None:
    """In the child, after setsid: make the pty its controlling terminal, so ^C is SIGINT."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class Terminal:
    """``sluice <args>`` on a pty; :meth:`expect` waits for its output to match."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None) -> None:
        master, slave = os.openpty()
        self._master = master
        self.process = subprocess.Popen(
            [sys.executable, "-m", "libs.tools.cli", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=child_env(env or {}),
            start_new_session=True,
            preexec_fn=_take_terminal,
        )
        os.close(slave)
        self.output = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:
                return
            if not chunk:
                return
            with self._lock:
                self.output += chunk.decode(errors="replace").replace("\r\n", "\n")

    def expect(self, pattern: str, timeout_s: float = 30.0, after: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the output past index ``after``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                found = re.compile(pattern).search(self.output, after)
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError(f"no {pattern!r} within {timeout_s}s; output so far:\n{self.output}")

    def send(self, text: str) -> None:
        os.write(self._master, text.encode())

    def wait(self, timeout_s: float = 15.0) -> int:
        return self.process.wait(timeout_s)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        os.close(self._master)
