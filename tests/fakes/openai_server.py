"""An OpenAI-compatible chat-completions server on 127.0.0.1 for tests of the real ``openai`` client.

Each request takes the next scripted behaviour (or the default): ``("json", {...})`` answers that object as
the message content, ``("text", "...")`` answers raw text, ``("refusal", "...")`` a refusal, ``("status",
429)`` an HTTP error, ``("bad_key", None)`` OpenAI's 401 for a wrong key (with the key's first 8 and last 4
characters, as OpenAI writes them), ``("hang", seconds)`` waits before answering. Every request body is recorded.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Behaviour = tuple[str, Any]


class FakeOpenAI:
    def __init__(self, default: Behaviour = ("json", {"sentiment": 0.5, "confidence": 0.8, "rationale": "ok"}),
                 usage: tuple[int, int] = (120, 30)) -> None:
        self.default = default
        self.script: deque[Behaviour] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.usage = usage
        self.release = threading.Event()  # ends a hang early (test teardown)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append(body)
                fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                kind, arg = fake.script.popleft() if fake.script else fake.default
                if kind == "hang":
                    fake.release.wait(arg)
                    kind, arg = fake.default
                if kind == "bad_key":  # OpenAI's answer to a wrong key: 401, echoing the key's ends
                    key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                    self._send(401, {"error": {
                        "message": f"Incorrect API key provided: {key[:8]}{'*' * max(4, len(key) - 12)}{key[-4:]}. "
                                   f"You can find your API key at https://platform.openai.com/account/api-keys.",
                        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
                    return
                if kind == "status":
                    self._send(arg, {"error": {"message": f"scripted {arg}", "type": "server_error"}})
                    return
                message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
                if kind == "json":
                    message["content"] = json.dumps(arg)
                elif kind == "text":
                    message["content"] = arg
                elif kind == "refusal":
                    message["refusal"] = arg
                self._send(200, {
                    "id": f"chatcmpl-{len(fake.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                    "usage": {"prompt_tokens": fake.usage[0], "completion_tokens": fake.usage[1],
                              "total_tokens": sum(fake.usage)},
                })

            def _send(self, code: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                    self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
