"""A headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``): no web socket,
no driver download, only Debian's ``chromium`` package.

The browser reads commands from its fd 3 and writes answers and events to its fd 4, each a JSON object ended by a
NUL byte. ``Browser.load`` opens a page, records console messages, uncaught exceptions and log entries, and
``Browser.evaluate`` runs an expression in the page (promises awaited).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-pipe",
)


SATURATED = 60  # max(r, g, b) - min(r, g, b) above this: a coloured pixel, not grey text or white

CHARTS = f"""
(async () => {{
  const charts = [];
  for (const figure of document.querySelectorAll("figure.chart")) {{
    const img = figure.querySelector("img");
    let decoded = true;
    try {{ await img.decode(); }} catch (error) {{ decoded = false; }}
    const canvas = document.createElement("canvas");
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    let coloured = 0;
    if (decoded && canvas.width && canvas.height) {{
      const context = canvas.getContext("2d");
      context.fillStyle = "#ffffff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(img, 0, 0);
      const pixels = context.getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 0; i < pixels.length; i += 4) {{
        const r = pixels[i], g = pixels[i + 1], b = pixels[i + 2];
        if (Math.max(r, g, b) - Math.min(r, g, b) > {SATURATED}) coloured++;
      }}
    }}
    charts.push({{
      panel: figure.closest("[data-panel]").dataset.panel,
      decoded, width: img.naturalWidth, height: img.naturalHeight, shown: img.getBoundingClientRect().width,
      coloured, hasData: figure.dataset.hasData,
    }});
  }}
  return charts;
}})()
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(AssertionError):
    pass


class Browser:
    def __init__(self, process: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.process = process
        self.to_browser = to_browser
        self.from_browser = from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    # -------------------------------------------------------------------------------------------- protocol
    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError("no answer from Chromium before the deadline")
            ready, _, _ = select.select([self.from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError(f"Chromium closed the pipe (exit code {self.process.poll()})")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def send(self, method: str, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """One command; events that arrive meanwhile are kept in ``events``."""
        self.next_id += 1
        command: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if self.session and not method.startswith(("Target.", "Browser.")):
            command["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)
                if message["method"] == method:
                    return message

    # -------------------------------------------------------------------------------------------- page
    def load(self, path: Path, timeout: float = 30.0) -> None:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.events.clear()
        self.send("Page.navigate", url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float = 30.0) -> Any:
        answer = self.send("Runtime.evaluate", timeout, expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"evaluation failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def problems(self) -> list[str]:
        """Console errors and warnings, uncaught exceptions and error log entries seen so far."""
        found = []
        for event in self.events:
            params = event.get("params", {})
            if event["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "warning", "assert"):
                found.append(f"console.{params['type']}: {params.get('args')}")
            elif event["method"] == "Runtime.exceptionThrown":
                found.append(f"exception: {params.get('exceptionDetails')}")
            elif event["method"] == "Log.entryAdded" and params["entry"].get("level") in ("error", "warning"):
                found.append(f"log {params['entry']['level']}: {params['entry'].get('text')}")
        return found


def _pipe() -> tuple[int, int]:
    """A pipe whose ends are above 4, so that moving them to fds 3 and 4 in the child cannot clobber each other."""
    ends = []
    for end in os.pipe():
        ends.append(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(end)
    return ends[0], ends[1]


@contextmanager
def chromium(executable: str, profile: Path, timeout: float = 30.0) -> Iterator[Browser]:
    """A fresh headless Chromium (its own profile directory), stopped by its PID on the way out."""
    to_read, to_browser = _pipe()  # the browser reads commands on its fd 3
    from_browser, to_write = _pipe()  # and writes answers on its fd 4

    # bash moves the pipe ends to fds 3 and 4, then becomes Chromium (no preexec_fn: safe with threads; dash
    # cannot name fds above 9).
    wire = f'exec "$0" "$@" 3<&{to_read} 4>&{to_write}'
    process = subprocess.Popen(
        ["/bin/bash", "-c", wire, executable, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        pass_fds=(to_read, to_write),
    )
    os.close(to_read)
    os.close(to_write)
    browser = Browser(process, to_browser, from_browser)
    try:
        browser.send("Browser.getVersion", timeout)
        yield browser
    finally:
        with suppress(BrowserError, OSError):
            browser.send("Browser.close", 5.0)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        os.close(to_browser)
        os.close(from_browser)
