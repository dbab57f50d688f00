"""Shared pieces for real-server tests: start `streamlit run app.py`, launch Debian's Chromium."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.ci import ci_required, real_clock_env

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_disconnect_races(log: str) -> str:
    """``log`` without the logged tracebacks that end in ``starlette.websockets.WebSocketDisconnected``."""
    kept, block = [], []
    for line in log.splitlines(keepends=True):
        if block:
            block.append(line)
            if line and not line[0].isspace() and not line.startswith(("Traceback", "During handling")) \
                    and line.strip():
                if "WebSocketDisconnected" not in line:
                    kept.extend(block)
                block = []
            continue
        if line.startswith("Traceback (most recent call last)"):
            block = [line]
        else:
            kept.append(line)
    kept.extend(block)
    return "".join(kept)


class AppServer:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115  (closed in stop)
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}: {self.log()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.read().decode().strip() == "ok":
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"streamlit not healthy after {timeout}s: {self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def app_log(self) -> str:
        """The server log less the tracebacks of a browser tab that closed while its websocket was being opened:
        Streamlit's web server logs that race (``starlette.websockets.WebSocketDisconnected``) with a traceback,
        though nothing of the app ran or failed. Every other traceback stays."""
        return without_disconnect_races(self.log())

    def rss_kb(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def launch_chromium(playwright):  # type: ignore[no-untyped-def]
    """Debian's Chromium (never `playwright install`). Under CI=true a missing browser fails; elsewhere it skips."""
    try:
        return playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"],
                                          env=real_clock_env())
    except Exception as e:
        if ci_required():
            pytest.fail(f"Chromium could not start under CI ({CHROMIUM}): {e}")
        pytest.skip(f"Chromium not available at {CHROMIUM}: {e}")


def wait_script_idle(page, timeout_ms: int = 30_000) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout_ms)


@contextmanager
def app_page(env: dict[str, str], log_path: Path, path: str = "/", *, width: int = 1280, height: int = 800,
             timeout_ms: int = 120_000) -> Iterator[Any]:
    """The real app with ``env`` and a headless Chromium tab of ``width`` x ``height`` on ``path``, once its script
    has finished its first run (the bench's screenshot scripts); the server stops when the block ends."""
    from playwright.sync_api import sync_playwright

    server = AppServer(env, log_path)
    try:
        server.wait_healthy()
        with sync_playwright() as p:
            browser = launch_chromium(p)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(server.url + path)
            wait_script_idle(page, timeout_ms)
            yield page
            browser.close()
    finally:
        server.stop()


def open_page(browser, url: str):  # type: ignore[no-untyped-def]
    """A laptop-sized tab on ``url``, once the app's script has finished its first run."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url)
    wait_script_idle(page)
    return page


def wait_until(fn, timeout: float, what: str, page=None):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # element not there yet
            last = e
        time.sleep(0.5)
    if page is not None:
        slug = re.sub(r"\W+", "_", what)
        page.screenshot(path=str(ARTIFACTS / f"timeout-{slug}.png"), full_page=True)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")
