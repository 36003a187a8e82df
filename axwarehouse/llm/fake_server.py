"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for tests and benchmarks.

It answers from a responder function (by default :func:`rule_responder`, which recognises the generation prompts
and answers them plausibly and deterministically), records every request (path, headers, JSON body), measures the
peak number of requests in flight, and can be told to misbehave: a queue of faults is consumed one per request
(``429``, ``500``, ``sleep:<s>``, ``malformed``, ``empty``, ``refuse``, ``truncate``), and ``fault_for`` injects
faults for prompts containing a given string.

Standard library only (``http.server`` + threads), so a test controls it completely.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict


def _h(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def rule_responder(body: dict) -> str:
    """Deterministic answers to the generation prompts of :mod:`axwarehouse.stages.generate` (keyed on their wording)."""
    prompt = body["messages"][-1]["content"]
    if "GENRE:" in prompt:
        return ["Text", "Code", "Math"][_h(prompt) % 3]
    if "RELATED WORDS:" in prompt:
        return "bank\nspring\n<NONE>-free word" if _h(prompt) % 2 else "bank\nspring"
    if "OTHER MEANING:" in prompt:
        word = prompt.split("Word: ", 1)[-1].split("\n", 1)[0].strip()
        return f"The word {word} can also mean a place unrelated to the concept at hand"
    if "UNRELATED CHECK:" in prompt:
        return "The two meanings share nothing.\nAnswer: <YES>"
    if "<FINAL>" in prompt:
        word = prompt.split("Word: ", 1)[-1].split("\n", 1)[0].strip()
        return f"<FINAL> Sure. Here the text goes on and the {word} sits in the middle of this answer, then it ends."
    words = [w for w in prompt.split() if w.isalpha()][:40]
    return "Answer: " + " ".join(words * 2)


class FakeChatServer:
    """``with FakeChatServer() as srv: OpenAI(base_url=srv.base_url, ...)``."""

    def __init__(self, responder: Callable[[dict], str] = rule_responder, delay_s: float = 0.0,
                 send_usage: bool = True):
        self.responder = responder
        self.delay_s = delay_s
        self.send_usage = send_usage
        self.faults: deque[str] = deque()
        self.fault_for: dict[str, str] = {}  # prompt substring -> fault applied every time
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> FakeChatServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                return None

            def do_POST(self) -> None:  # noqa: N802 (http.server naming)
                server._handle(self)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def chat_requests(self) -> int:
        return sum(1 for r in self.requests if r.path.endswith("/chat/completions"))

    # -- handling --------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            body = {}
        with self._lock:
            self.requests.append(RecordedRequest(h.path, {k.lower(): v for k, v in h.headers.items()}, body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            fault = self.faults.popleft() if self.faults else None
        try:
            prompt = (body.get("messages") or [{}])[-1].get("content", "")
            fault = fault or next((f for s, f in self.fault_for.items() if s in prompt), None)
            if self.delay_s:
                time.sleep(self.delay_s)
            if fault and fault.startswith("sleep:"):
                time.sleep(float(fault.split(":", 1)[1]))
                fault = None
            if fault in ("429", "500", "503", "400", "401"):
                code = int(fault)
                payload = {"error": {"message": f"fake {code}", "type": "fake", "code": code}}
                headers = {"retry-after": "0"} if code == 429 else {}
                return self._send(h, code, json.dumps(payload).encode(), headers)
            if fault == "malformed":
                return self._send(h, 200, b'{"id": "x", "object": "chat.completion", "choices": []}')
            content = self.responder(body)
            finish = "stop"
            if fault == "empty":
                content = ""
            elif fault == "refuse":
                content = "I'm sorry, but I can't help with that."
            elif fault == "truncate":
                finish = "length"
            resp = {
                "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model", "fake"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                             "finish_reason": finish}],
            }
            if self.send_usage:
                pt = sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
                ct = len(content.split())
                resp["usage"] = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
            self._send(h, 200, json.dumps(resp).encode())
        finally:
            with self._lock:
                self.in_flight -= 1

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, payload: bytes, headers: dict | None = None) -> None:
        try:
            h.send_response(code)
            h.send_header("content-type", "application/json")
            h.send_header("content-length", str(len(payload)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client timed out and hung up
            pass
