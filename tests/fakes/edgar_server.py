"""SEC EDGAR served from the recorded-format fixtures in tests/fixtures/edgar on 127.0.0.1 (never sec.gov)."""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "edgar"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.edgar.answer(self)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    edgar: FakeEdgar


class FakeEdgar:
    """Serves the fixture tree at SEC's paths; records every request's path and headers."""

    def __init__(self, root: Path = FIXTURES) -> None:
        self.root = root.resolve()
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers with lower-case names)
        self.faults: dict[str, int] = {}  # path -> HTTP status to answer instead
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.edgar = self
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def paths(self) -> list[str]:
        with self._lock:
            return [p for p, _ in self.requests]

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        path = urlsplit(h.path).path
        with self._lock:
            self.requests.append((path, {k.lower(): v for k, v in h.headers.items()}))
        status = self.faults.get(path)
        file = (self.root / path.lstrip("/")).resolve()
        if status is None and (not file.is_file() or not file.is_relative_to(self.root)):
            status = 404
        if status is not None:
            body, ctype = json.dumps({"error": f"status {status}"}).encode(), "application/json"
        else:
            status, body = 200, file.read_bytes()
            ctype = "application/json" if file.suffix == ".json" else "text/html"  # no charset, like SEC's
        headers = {"Content-Type": ctype}
        if "gzip" in h.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)
