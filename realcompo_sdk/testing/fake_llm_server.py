"""A local stand-in for the OpenAI and Anthropic HTTP APIs, for tests of LLM planners.

`FakeLLMServer` listens on 127.0.0.1 (a free port) and speaks just enough of the OpenAI
chat-completions protocol (``POST /v1/chat/completions``) and the Anthropic messages protocol
(``POST /v1/messages``) for the official clients: tests point the real SDK client at it through
its base URL, so requests go over real HTTP, through the SDK's own retries and timeouts.

Replies come from a queue of scripted `FakeReply` objects (then from an optional `responder`
callable), and every request is recorded for assertions::

    with FakeLLMServer() as server:
        server.push(openai_chat_reply(content=json.dumps(layout)))
        planner = GPTPlanner(base_url=server.openai_base_url, cache=False)
        planner.plan("a red circle")
        assert server.requests[0].json["model"] == "gpt-4o"

The server is bounded: it answers at most `max_requests` requests and shuts itself down after
`lifetime` seconds, so a test that forgets to stop it cannot hang the run. A request that finds no
scripted reply gets HTTP 418 with ``x-should-retry: false`` (the SDKs do not retry it), and is
listed in `unexpected`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

OPENAI_PATH = "/v1/chat/completions"
ANTHROPIC_PATH = "/v1/messages"


@dataclass
class FakeReply:
    """One scripted HTTP answer: status, JSON (or raw) body, headers, and an optional delay."""

    status: int = 200
    body: Any = None  # dict/list → JSON; str/bytes → sent as is
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a slow server)
    path: str | None = None  # when set, the request must be for this path (else HTTP 404)

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class RecordedRequest:
    """A request as the server received it. Header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Responder = Callable[[RecordedRequest], FakeReply]


class FakeLLMServer:
    """A threaded HTTP server on 127.0.0.1 answering from scripted replies. Use as a context manager."""

    def __init__(self, *, max_requests: int = 100, lifetime: float = 120.0, responder: Responder | None = None):
        self.max_requests = max_requests
        self.lifetime = lifetime
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self.unexpected: list[RecordedRequest] = []
        self._replies: deque[FakeReply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Timer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> FakeLLMServer:
        """Start serving on a free port of 127.0.0.1 (a context manager does it for you)."""
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-llm-server", daemon=True)
        self._thread.start()
        self._watchdog = threading.Timer(self.lifetime, self.stop)
        self._watchdog.daemon = True
        self._watchdog.start()
        return self

    def stop(self) -> None:
        """Stop serving and join the server thread."""
        self._stopping.set()  # wakes handlers sleeping in a scripted delay
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.cancel()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT of the running server."""
        if self._httpd is None:
            raise RuntimeError("the fake LLM server is not running; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def openai_base_url(self) -> str:
        """What to pass as `base_url` to `openai.OpenAI` (it appends /chat/completions)."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """What to pass as `base_url` to `anthropic.Anthropic` (it appends /v1/messages)."""
        return self.url

    # -- scripting -------------------------------------------------------------------------
    def push(self, *replies: FakeReply) -> None:
        """Queue replies; each request takes the next one."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._replies)

    def _next_reply(self, request: RecordedRequest) -> FakeReply:
        with self._lock:
            self.requests.append(request)
            if len(self.requests) > self.max_requests:
                self.unexpected.append(request)
                return _no_reply(f"the fake server answers at most {self.max_requests} requests")
            if self._replies:
                reply = self._replies.popleft()
            elif self.responder is not None:
                reply = None
            else:
                self.unexpected.append(request)
                return _no_reply("no scripted reply left for this request")
        if reply is None:
            assert self.responder is not None
            reply = self.responder(request)
        if reply.path is not None and reply.path != request.path:
            return FakeReply(status=404, body=_error_body(f"fake server expected {reply.path}, got {request.path}"),
                             headers={"x-should-retry": "false"})
        if request.path not in (OPENAI_PATH, ANTHROPIC_PATH):
            return FakeReply(status=404, body=_error_body(f"unknown path {request.path}"),
                             headers={"x-should-retry": "false"})
        return reply


class _Handler(BaseHTTPRequestHandler):
    owner: FakeLLMServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        request = RecordedRequest("POST", self.path.split("?", 1)[0],
                                  {k.lower(): v for k, v in self.headers.items()}, body)
        reply = self.owner._next_reply(request)
        if reply.delay and self.owner._stopping.wait(reply.delay):
            return  # the server is stopping: drop the connection
        data = reply.encoded()
        try:
            self.send_response(reply.status)
            headers = {"content-type": "application/json", **{k.lower(): v for k, v in reply.headers.items()}}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer

    def do_GET(self) -> None:
        self.do_POST()


def _error_body(message: str, type_: str = "fake_server_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": type_}}


def _no_reply(message: str) -> FakeReply:
    return FakeReply(status=418, body=_error_body(message), headers={"x-should-retry": "false"})


# -- reply builders: OpenAI chat completions --------------------------------------------------

def openai_chat_reply(content: str | None = None, *, refusal: str | None = None, finish_reason: str = "stop",
                      model: str = "gpt-4o", **reply_options: Any) -> FakeReply:
    """A 200 chat-completion whose single choice carries `content` (or a `refusal`)."""
    body = {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "logprobs": None,
            "finish_reason": finish_reason,
        }],
        "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20},
    }
    return FakeReply(body=body, path=OPENAI_PATH, **reply_options)


def openai_error_reply(status: int, message: str, *, type_: str = "server_error", **reply_options: Any) -> FakeReply:
    return FakeReply(status=status, body={"error": {"message": message, "type": type_, "param": None, "code": None}},
                     path=OPENAI_PATH, **reply_options)


# -- reply builders: Anthropic messages --------------------------------------------------------

def anthropic_tool_reply(tool_input: Any, *, tool_name: str = "submit_layout", text: str | None = None,
                         stop_reason: str = "tool_use", model: str = "claude-sonnet-5-5",
                         **reply_options: Any) -> FakeReply:
    """A 200 message whose content is an optional text block then one tool_use block."""
    content: list[dict[str, Any]] = []
    if text is not None:
        content.append({"type": "text", "text": text})
    content.append({"type": "tool_use", "id": f"toolu_fake_{time.monotonic_ns()}", "name": tool_name,
                    "input": tool_input})
    return FakeReply(body=_anthropic_message(content, stop_reason, model), path=ANTHROPIC_PATH, **reply_options)


def anthropic_text_reply(text: str, *, stop_reason: str = "end_turn", model: str = "claude-sonnet-5-5",
                         **reply_options: Any) -> FakeReply:
    """A 200 message with text only (no tool use), e.g. a refusal with ``stop_reason="refusal"``."""
    content = [{"type": "text", "text": text}] if text else []
    return FakeReply(body=_anthropic_message(content, stop_reason, model), path=ANTHROPIC_PATH, **reply_options)


def anthropic_error_reply(status: int, message: str, *, type_: str = "api_error", **reply_options: Any) -> FakeReply:
    return FakeReply(status=status, body={"type": "error", "error": {"type": type_, "message": message}},
                     path=ANTHROPIC_PATH, **reply_options)


def _anthropic_message(content: list[dict[str, Any]], stop_reason: str, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_fake_{time.monotonic_ns()}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 10},
    }


# -- a responder that plans for real ----------------------------------------------------------

def planning_responder(protocol: str, plan: Callable[[str], Any] | None = None) -> Responder:
    """A responder answering each request with a valid layout of the prompt it carries.

    `protocol` is ``"openai"`` or ``"anthropic"``; `plan` maps a prompt to a `Layout` (default:
    the offline `rules` planner). Contract tests of LLM planners use it so that any number of
    requests get a sensible answer.
    """
    from ..planners.llm import TOOL_NAME, prompt_from_user_message

    if plan is None:
        from ..planners.rules import RulesPlanner

        plan = RulesPlanner().plan

    def respond(request: RecordedRequest) -> FakeReply:
        body = request.json or {}
        prompt = None
        for message in reversed(body.get("messages", [])):
            content = message.get("content")
            if message.get("role") == "user" and isinstance(content, str):
                prompt = prompt_from_user_message(content)
                if prompt is not None:
                    break
        if prompt is None:
            return FakeReply(status=400, body=_error_body("no <prompt> in the user message"),
                             headers={"x-should-retry": "false"})
        layout = plan(prompt)
        reply = {"objects": [{"phrase": o.phrase, "box": o.box.model_dump()} for o in layout.objects],
                 "background": layout.background}
        if protocol == "openai":
            return openai_chat_reply(json.dumps(reply), model=body.get("model", "gpt-4o"))
        return anthropic_tool_reply(reply, tool_name=TOOL_NAME, model=body.get("model", "claude"))

    return respond
