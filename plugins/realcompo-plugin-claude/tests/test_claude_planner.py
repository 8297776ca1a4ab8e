"""The `claude` planner against a local HTTP server speaking the Anthropic protocol, through the real client."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from realcompo_plugin_claude.planner import ClaudePlanner

from realcompo_sdk import Layout, PlannerError
from realcompo_sdk.errors import InvalidPlanError, MissingAPIKeyError, PlannerRefusalError
from realcompo_sdk.planners.llm import TOOL_NAME, layout_reply_schema, system_prompt
from realcompo_sdk.testing.fake_llm_server import (
    ANTHROPIC_PATH,
    FakeLLMServer,
    anthropic_error_reply,
    anthropic_text_reply,
    anthropic_tool_reply,
    planning_responder,
)
from realcompo_sdk.testing.planner_contract import LayoutPlannerContract

PROMPT = "a cat sitting on top of a table next to a dog"
GOOD = {"objects": [{"phrase": "cat", "box": {"x0": 0.2, "y0": 0.22, "x1": 0.45, "y1": 0.5}},
                    {"phrase": "table", "box": {"x0": 0.05, "y0": 0.5, "x1": 0.6, "y1": 0.92}},
                    {"phrase": "dog", "box": {"x0": 0.66, "y0": 0.5, "x1": 0.95, "y1": 0.9}}],
        "background": None}
SECRET = "sk-ant-test-Th1sIsAVerySecretKey0123456789"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(lifetime=60) as fake:
        yield fake
        assert not fake.unexpected, f"requests without a scripted reply: {[r.path for r in fake.unexpected]}"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "plans"


def planner_for(server: FakeLLMServer, cache_dir: Path, **options: object) -> ClaudePlanner:
    options = {"base_url": server.anthropic_base_url, "cache_dir": str(cache_dir), "max_retries": 0, "timeout": 5,
               **options}
    return ClaudePlanner(**options)


def good(**kw: object) -> object:
    return anthropic_tool_reply(GOOD, **kw)


def test_request_carries_model_tool_definition_and_messages(server: FakeLLMServer, cache_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    server.push(good())
    layout = planner_for(server, cache_dir, model="claude-haiku-4-5").plan(PROMPT)

    assert isinstance(layout, Layout)
    assert [o.phrase for o in layout.objects] == ["cat", "table", "dog"]
    (request,) = server.requests
    assert request.path == ANTHROPIC_PATH
    assert SECRET in (request.headers.get("x-api-key"), request.headers.get("authorization", "").removeprefix("Bearer "))
    body = request.json
    assert body["model"] == "claude-haiku-4-5"
    assert "temperature" not in body and body["max_tokens"] == 2048
    assert body["system"] == system_prompt()
    (tool,) = body["tools"]
    assert tool["name"] == TOOL_NAME and tool["input_schema"] == layout_reply_schema()
    assert body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    (message,) = body["messages"]
    assert message["role"] == "user" and PROMPT in message["content"]


def test_default_model_is_a_claude_sonnet(cache_dir: Path) -> None:
    assert ClaudePlanner().options.model.startswith("claude-sonnet-")


def test_temperature_is_sent_only_when_set(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good())
    planner_for(server, cache_dir, temperature=0.0, max_tokens=512).plan(PROMPT)
    body = server.requests[0].json
    assert body["temperature"] == 0 and body["max_tokens"] == 512


INVALID_INPUTS = {
    "schema_violation": ({"objects": [{"phrase": "cat", "box": [0.1, 0.1, 0.3, 0.3]}], "background": None},
                         "objects[0] ('cat').box"),
    "out_of_range": ({"objects": [{"phrase": "cat", "box": {"x0": -0.1, "y0": 0.1, "x1": 0.4, "y1": 0.3}}],
                      "background": None}, "greater than or equal to 0"),
    "inverted": ({"objects": [{"phrase": "cat", "box": {"x0": 0.1, "y0": 0.5, "x1": 0.4, "y1": 0.3}}],
                  "background": None}, "empty or inverted"),
    "no_objects": ({"objects": [], "background": None}, "the list is empty"),
    "missing_objects": ({"background": None}, "objects: Field required"),
    "phrase_not_in_prompt": ({"objects": [{"phrase": "horse", "box": {"x0": 0.1, "y0": 0.1, "x1": 0.4, "y1": 0.3}}],
                              "background": None}, "not words of the prompt"),
}


@pytest.mark.parametrize("kind", list(INVALID_INPUTS))
def test_invalid_tool_input_gets_one_repair_round_trip(kind: str, server: FakeLLMServer, cache_dir: Path) -> None:
    tool_input, problem = INVALID_INPUTS[kind]
    server.push(anthropic_tool_reply(tool_input, text="Here is the layout."), good())
    planner = planner_for(server, cache_dir)
    assert [o.phrase for o in planner.plan(PROMPT).objects] == ["cat", "table", "dog"]
    assert planner.last_run["repaired"] is True

    first, second = (r.json["messages"] for r in server.requests)
    assert second[0] == first[0]
    assistant, result = second[1], second[2]
    assert assistant["role"] == "assistant"
    assert assistant["content"][0] == {"type": "text", "text": "Here is the layout."}
    tool_use = assistant["content"][1]
    assert tool_use["type"] == "tool_use" and tool_use["name"] == TOOL_NAME and tool_use["input"] == tool_input
    assert result["role"] == "user"
    (block,) = result["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == tool_use["id"] and block["is_error"] is True
    assert problem in block["content"]


def test_invalid_twice_raises_with_the_raw_reply_saved(server: FakeLLMServer, cache_dir: Path) -> None:
    bad = {"objects": [{"phrase": "cat", "box": {"x0": 0.1, "y0": 0.5, "x1": 0.4, "y1": 0.3}}], "background": None}
    server.push(anthropic_tool_reply({"objects": []}), anthropic_tool_reply(bad))
    with pytest.raises(InvalidPlanError) as info:
        planner_for(server, cache_dir).plan(PROMPT)
    error = info.value
    assert json.loads(error.raw_reply) == bad and error.raw_reply in str(error)
    assert "empty or inverted" in str(error)
    assert error.saved_path and Path(error.saved_path).exists() and error.saved_path in str(error)
    attempts = json.loads(Path(error.saved_path).read_text())["attempts"]
    assert len(attempts) == 2 and "the list is empty" in attempts[0]["problems"]


def test_refusal_stop_reason_is_reported_as_a_refusal(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(anthropic_text_reply("I won't help with that.", stop_reason="refusal"))
    with pytest.raises(PlannerRefusalError, match="refused.*I won't help with that"):
        planner_for(server, cache_dir).plan(PROMPT)
    assert len(server.requests) == 1


def test_text_without_tool_use_is_reported_as_a_refusal(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(anthropic_text_reply("I'd rather describe the scene in words."))
    with pytest.raises(PlannerRefusalError, match="instead of calling the submit_layout tool"):
        planner_for(server, cache_dir).plan(PROMPT)


def test_429_with_retry_after_is_retried(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(anthropic_error_reply(429, "Number of requests has exceeded your rate limit", type_="rate_limit_error",
                                      headers={"retry-after": "0.3"}), good())
    start = time.monotonic()
    assert len(planner_for(server, cache_dir, max_retries=2).plan(PROMPT).objects) == 3
    assert len(server.requests) == 2 and time.monotonic() - start >= 0.3


def test_overloaded_529_is_retried_then_reported(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(*[anthropic_error_reply(529, "Overloaded", type_="overloaded_error", headers={"retry-after-ms": "10"})
                  for _ in range(2)])
    with pytest.raises(PlannerError, match=r"HTTP 529\) even after 1 retries.*Overloaded"):
        planner_for(server, cache_dir, max_retries=1).plan(PROMPT)
    assert len(server.requests) == 2


def test_500_then_success(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(anthropic_error_reply(500, "Internal server error", headers={"retry-after-ms": "10"}), good())
    assert len(planner_for(server, cache_dir, max_retries=1).plan(PROMPT).objects) == 3


def test_slow_reply_past_the_timeout_is_a_clear_error(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good(delay=10))
    start = time.monotonic()
    with pytest.raises(PlannerError, match=r"did not answer within 0.3 s"):
        planner_for(server, cache_dir, timeout=0.3, max_retries=0).plan(PROMPT)
    assert time.monotonic() - start < 5


def test_missing_key_names_the_environment_variable(cache_dir: Path) -> None:
    with pytest.raises(MissingAPIKeyError, match="ANTHROPIC_API_KEY"):
        ClaudePlanner(cache_dir=str(cache_dir)).plan(PROMPT)


def test_key_never_appears_in_errors_logs_or_cache(server: FakeLLMServer, cache_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.push(anthropic_error_reply(401, f"invalid x-api-key {SECRET}", type_="authentication_error"))
    with pytest.raises(PlannerError) as info:
        planner_for(server, cache_dir).plan(PROMPT)
    assert "ANTHROPIC_API_KEY" in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))

    server.push(good())
    planner = planner_for(server, cache_dir)
    planner.plan(PROMPT)
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert files and all(SECRET not in p.read_text() for p in files)
    assert SECRET not in json.dumps(planner.describe())
    assert SECRET not in caplog.text


def test_rerun_is_served_from_the_cache(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good())
    first = planner_for(server, cache_dir).plan(PROMPT)
    assert planner_for(server, cache_dir).plan(PROMPT) == first
    assert len(server.requests) == 1


def test_gpt_and_claude_do_not_share_cache_entries(server: FakeLLMServer, cache_dir: Path) -> None:
    from realcompo_sdk.planners.llm import LLMLayoutPlanner

    assert issubclass(ClaudePlanner, LLMLayoutPlanner)
    assert planner_for(server, cache_dir).cache_key(PROMPT) != planner_for(
        server, cache_dir, model="gpt-4o").cache_key(PROMPT)


def test_plugin_registers_claude_lazily() -> None:
    root = Path(__file__).resolve().parents[1]
    code = ("import sys\n"
            "from realcompo_plugin_claude import plugin\n"
            "from realcompo_sdk.plugins import PluginLoader\n"
            "report = PluginLoader(entry_points=[], builtins=[plugin]).load()\n"
            "reg = report.registrations[('planner', 'claude')]\n"
            "assert isinstance(reg.target, str), reg.target\n"
            "assert 'anthropic' not in sys.modules, 'importing the plugin imported anthropic'\n"
            "cls = reg.load_class()\n"
            "assert cls.__name__ == 'ClaudePlanner' and cls.id == 'claude'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": f"{root}:{root.parents[1]}", "PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr


class TestClaudePlannerContract(LayoutPlannerContract):
    prompts = ("a small blue square above a big yellow star", "two cats and a dog on a beige background")

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path) -> Iterator[None]:
        with FakeLLMServer(responder=planning_responder("anthropic"), lifetime=60) as fake:
            self.server, self.cache_dir = fake, tmp_path / "plans"
            yield

    def make_planner(self) -> ClaudePlanner:
        return ClaudePlanner(base_url=self.server.anthropic_base_url, cache_dir=str(self.cache_dir), max_retries=0)


def test_a_web_page_instead_of_an_api_reply_is_one_clear_error(server: FakeLLMServer, cache_dir: Path) -> None:
    from realcompo_sdk.testing.fake_llm_server import FakeReply

    server.push(FakeReply(status=200, body="<html><body>Proxy login</body></html>", headers={"content-type": "text/html"}))
    with pytest.raises(PlannerError, match=r"answered, but not with an API reply \(the body starts '<html><body>Proxy login"):
        planner_for(server, cache_dir).plan(PROMPT)
