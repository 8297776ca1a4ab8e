"""The `gpt` planner against a local HTTP server speaking the OpenAI protocol, through the real client."""

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
from realcompo_plugin_gpt.planner import GPTPlanner

from realcompo_sdk import Layout, PlannerError
from realcompo_sdk.errors import InvalidPlanError, MissingAPIKeyError, PlannerRefusalError
from realcompo_sdk.planners.llm import SCHEMA_NAME, layout_reply_schema, system_prompt
from realcompo_sdk.testing.fake_llm_server import (
    OPENAI_PATH,
    FakeLLMServer,
    openai_chat_reply,
    openai_error_reply,
    planning_responder,
)
from realcompo_sdk.testing.planner_contract import LayoutPlannerContract

PROMPT = "a red circle to the left of a blue square on a grey background"
GOOD = {"objects": [{"phrase": "red circle", "box": {"x0": 0.1, "y0": 0.35, "x1": 0.36, "y1": 0.61}},
                    {"phrase": "blue square", "box": {"x0": 0.55, "y0": 0.35, "x1": 0.81, "y1": 0.61}}],
        "background": "a grey background"}
SECRET = "sk-test-Th1sIsAVerySecretKey0123456789"


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(lifetime=60) as fake:
        yield fake
        assert not fake.unexpected, f"requests without a scripted reply: {[r.path for r in fake.unexpected]}"


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "plans"


def planner_for(server: FakeLLMServer, cache_dir: Path, **options: object) -> GPTPlanner:
    options = {"base_url": server.openai_base_url, "cache_dir": str(cache_dir), "max_retries": 0, "timeout": 5,
               **options}
    return GPTPlanner(**options)


def good(**kw: object) -> object:
    return openai_chat_reply(json.dumps(GOOD), **kw)


# -- the request ---------------------------------------------------------------------------------

def test_request_carries_model_schema_and_messages(server: FakeLLMServer, cache_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server.push(good())
    layout = planner_for(server, cache_dir, model="gpt-4o-mini").plan(PROMPT)

    assert isinstance(layout, Layout)
    assert [o.phrase for o in layout.objects] == ["red circle", "blue square"]
    assert layout.background == "a grey background"
    (request,) = server.requests
    assert request.path == OPENAI_PATH
    assert request.headers["authorization"] == f"Bearer {SECRET}"
    body = request.json
    assert body["model"] == "gpt-4o-mini"
    assert body["temperature"] == 0
    assert body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": SCHEMA_NAME, "strict": True, "schema": layout_reply_schema()}}
    assert body["messages"][0] == {"role": "system", "content": system_prompt()}
    assert body["messages"][1]["role"] == "user" and PROMPT in body["messages"][1]["content"]
    assert "token" not in json.dumps(layout_reply_schema())  # token positions are never asked for


def test_reply_schema_is_strict_mode_compatible() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "default" not in node
            if node.get("type") == "object":
                assert node["additionalProperties"] is False
                assert sorted(node["required"]) == sorted(node["properties"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    schema = layout_reply_schema()
    walk(schema)
    assert set(schema["properties"]) == {"objects", "background"}
    assert set(schema["properties"]["objects"]["items"]["properties"]) == {"phrase", "box"}


def test_json_object_mode_puts_the_schema_in_the_prompt(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good())
    planner_for(server, cache_dir, structured_output="json_object", temperature=None, seed=7).plan(PROMPT)
    body = server.requests[0].json
    assert body["response_format"] == {"type": "json_object"}
    assert "temperature" not in body and body["seed"] == 7
    assert json.dumps(layout_reply_schema()) in body["messages"][0]["content"]


def test_markdown_fenced_json_is_accepted(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_chat_reply("```json\n" + json.dumps(GOOD) + "\n```"))
    assert len(planner_for(server, cache_dir).plan(PROMPT).objects) == 2


# -- invalid output: one repair round trip, then a clear error ------------------------------------

INVALID_REPLIES = {
    "not_json": ("{'objects': [oops", "not valid JSON"),
    "schema_violation": (json.dumps({"objects": [{"phrase": "red circle", "box": [0.1, 0.1, 0.3, 0.3]}],
                                     "background": None}), "objects[0] ('red circle').box"),
    "out_of_range": (json.dumps({"objects": [{"phrase": "red circle",
                                              "box": {"x0": 0.1, "y0": 0.1, "x1": 1.4, "y1": 0.3}}],
                                 "background": None}), "x1: Input should be less than or equal to 1"),
    "inverted": (json.dumps({"objects": [{"phrase": "red circle", "box": {"x0": 0.6, "y0": 0.1, "x1": 0.3, "y1": 0.3}}],
                             "background": None}), "empty or inverted"),
    "no_objects": (json.dumps({"objects": [], "background": None}), "the list is empty"),
    "phrase_not_in_prompt": (json.dumps({"objects": [{"phrase": "green triangle",
                                                      "box": {"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3}}],
                                         "background": None}), "not words of the prompt"),
    "extra_field": (json.dumps({"objects": [{"phrase": "red circle", "box": {"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3},
                                             "token_positions": [2, 3]}], "background": None}), "unexpected field"),
}


@pytest.mark.parametrize("kind", list(INVALID_REPLIES))
def test_invalid_reply_gets_one_repair_round_trip(kind: str, server: FakeLLMServer, cache_dir: Path) -> None:
    raw, problem = INVALID_REPLIES[kind]
    server.push(openai_chat_reply(raw), good())
    planner = planner_for(server, cache_dir)
    layout = planner.plan(PROMPT)

    assert [o.phrase for o in layout.objects] == ["red circle", "blue square"]
    assert planner.last_run["repaired"] is True
    first, second = (r.json["messages"] for r in server.requests)
    assert second[: len(first)] == first
    assert second[len(first)] == {"role": "assistant", "content": raw}
    assert second[len(first) + 1]["role"] == "user"
    assert problem in second[len(first) + 1]["content"]


def test_invalid_twice_raises_with_the_raw_reply_saved(server: FakeLLMServer, cache_dir: Path) -> None:
    raw_second = json.dumps({"objects": [{"phrase": "green triangle",
                                          "box": {"x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3}}], "background": None})
    server.push(openai_chat_reply("not json at all"), openai_chat_reply(raw_second))
    with pytest.raises(InvalidPlanError) as info:
        planner_for(server, cache_dir).plan(PROMPT)

    error = info.value
    assert len(server.requests) == 2
    assert error.raw_reply == raw_second and raw_second in str(error)
    assert "green triangle" in error.problems and "not words of the prompt" in str(error)
    assert error.saved_path is not None and error.saved_path in str(error)
    saved = json.loads(Path(error.saved_path).read_text())
    assert saved["prompt"] == PROMPT
    assert [a["raw_reply"] for a in saved["attempts"]] == ["not json at all", raw_second]
    assert "not valid JSON" in saved["attempts"][0]["problems"]
    assert not list(cache_dir.glob("??/*.json"))  # nothing cached


def test_truncated_reply_says_so(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_chat_reply('{"objects": [{"phr', finish_reason="length"), good())
    planner_for(server, cache_dir, max_tokens=50).plan(PROMPT)
    assert "cut off at the token limit" in server.requests[1].json["messages"][-1]["content"]
    assert server.requests[0].json["max_tokens"] == 50


# -- refusals and API errors -------------------------------------------------------------------------

def test_refusal_is_reported_as_a_refusal(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_chat_reply(None, refusal="I can't help with that."))
    with pytest.raises(PlannerRefusalError, match="refused.*I can't help with that"):
        planner_for(server, cache_dir).plan(PROMPT)
    assert len(server.requests) == 1  # no repair for a refusal


def test_content_filter_is_a_refusal(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_chat_reply("", finish_reason="content_filter"))
    with pytest.raises(PlannerRefusalError, match="content filter"):
        planner_for(server, cache_dir).plan(PROMPT)


def test_429_with_retry_after_is_retried(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_error_reply(429, "Rate limit reached", type_="rate_limit_error",
                                   headers={"retry-after": "0.3"}), good())
    start = time.monotonic()
    layout = planner_for(server, cache_dir, max_retries=2).plan(PROMPT)
    assert len(layout.objects) == 2
    assert len(server.requests) == 2
    assert time.monotonic() - start >= 0.3  # the SDK waited as the server asked
    assert server.requests[1].headers.get("x-stainless-retry-count") == "1"


def test_500_is_retried_then_succeeds(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_error_reply(500, "boom", headers={"retry-after-ms": "10"}), good())
    assert len(planner_for(server, cache_dir, max_retries=1).plan(PROMPT).objects) == 2
    assert len(server.requests) == 2


def test_500_after_all_retries_is_a_clear_error(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(*[openai_error_reply(500, "the server broke", headers={"retry-after-ms": "10"}) for _ in range(3)])
    with pytest.raises(PlannerError, match=r"HTTP 500\) even after 2 retries.*the server broke"):
        planner_for(server, cache_dir, max_retries=2).plan(PROMPT)
    assert len(server.requests) == 3


def test_429_without_retries_says_rate_limited(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_error_reply(429, "Rate limit reached", headers={"retry-after": "0.01"}))
    with pytest.raises(PlannerError, match="rate limiting"):
        planner_for(server, cache_dir, max_retries=0).plan(PROMPT)


def test_slow_reply_past_the_timeout_is_a_clear_error(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good(delay=10))
    start = time.monotonic()
    with pytest.raises(PlannerError, match=r"did not answer within 0.3 s"):
        planner_for(server, cache_dir, timeout=0.3, max_retries=0).plan(PROMPT)
    assert time.monotonic() - start < 5


def test_unreachable_server_is_a_clear_error(cache_dir: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(PlannerError, match=f"cannot connect to http://127.0.0.1:{port}/v1"):
        GPTPlanner(base_url=f"http://127.0.0.1:{port}/v1", cache_dir=str(cache_dir), max_retries=0).plan(PROMPT)


def test_server_without_json_schema_support_gets_a_hint(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_error_reply(400, "response_format json_schema is not supported", type_="invalid_request_error"))
    with pytest.raises(PlannerError, match="structured_output=json_object"):
        planner_for(server, cache_dir).plan(PROMPT)


def test_unknown_model_404_names_the_model(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(openai_error_reply(404, "The model `gpt-nope` does not exist", type_="invalid_request_error"))
    with pytest.raises(PlannerError, match="'gpt-nope'"):
        planner_for(server, cache_dir, model="gpt-nope").plan(PROMPT)


# -- keys --------------------------------------------------------------------------------------------

def test_missing_key_names_the_environment_variable(cache_dir: Path) -> None:
    with pytest.raises(MissingAPIKeyError, match="needs an OpenAI API key in the environment variable OPENAI_API_KEY"):
        GPTPlanner(cache_dir=str(cache_dir)).plan(PROMPT)


def test_other_key_variable_can_be_named(cache_dir: Path) -> None:
    with pytest.raises(MissingAPIKeyError, match="GROQ_API_KEY"):
        GPTPlanner(cache_dir=str(cache_dir), base_url="https://api.groq.com/openai/v1",
                   api_key_env="GROQ_API_KEY").plan(PROMPT)


def test_local_server_needs_no_key(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good())
    assert len(planner_for(server, cache_dir).plan(PROMPT).objects) == 2
    assert server.requests[0].headers["authorization"].startswith("Bearer ")


def test_key_never_appears_in_errors_logs_or_cache(server: FakeLLMServer, cache_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    server.push(openai_error_reply(401, f"Incorrect API key provided: {SECRET}.", type_="invalid_request_error"))
    with pytest.raises(PlannerError) as info:
        planner_for(server, cache_dir).plan(PROMPT)
    assert "OPENAI_API_KEY" in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))
    assert SECRET not in repr(info.value.args)

    server.push(openai_chat_reply("not json"), openai_chat_reply("still not json"))
    with pytest.raises(InvalidPlanError) as invalid:
        planner_for(server, cache_dir).plan(PROMPT)
    assert SECRET not in str(invalid.value)

    server.push(good())
    planner = planner_for(server, cache_dir)
    planner.plan(PROMPT)
    assert SECRET not in json.dumps(planner.describe())
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert files and all(SECRET not in p.read_text() for p in files)
    assert SECRET not in caplog.text


# -- cache and replay ----------------------------------------------------------------------------------

def test_rerun_is_served_from_the_cache(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good())
    first = planner_for(server, cache_dir).plan(PROMPT)
    planner = planner_for(server, cache_dir)
    assert planner.plan(PROMPT) == first
    assert planner.last_run["source"] == "cache"
    assert len(server.requests) == 1


def test_cache_key_changes_with_model_prompt_and_temperature(server: FakeLLMServer, cache_dir: Path) -> None:
    base = planner_for(server, cache_dir)
    keys = {base.cache_key(PROMPT), base.cache_key(PROMPT + " "), planner_for(server, cache_dir, timeout=9).cache_key(PROMPT)}
    assert len(keys) == 1  # whitespace and timeouts do not change the answer
    others = {planner_for(server, cache_dir, model="gpt-4.1").cache_key(PROMPT), base.cache_key("a red circle"),
              planner_for(server, cache_dir, temperature=0.5).cache_key(PROMPT),
              GPTPlanner(cache_dir=str(cache_dir)).cache_key(PROMPT)}
    assert len(others) == 4 and not keys & others


def test_no_cache_asks_every_time(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good(), good())
    planner = planner_for(server, cache_dir, cache=False)
    planner.plan(PROMPT)
    planner.plan(PROMPT)
    assert len(server.requests) == 2
    assert not cache_dir.exists() or not list(cache_dir.glob("??/*.json"))


def test_corrupt_cache_entry_is_ignored_with_a_warning(server: FakeLLMServer, cache_dir: Path) -> None:
    server.push(good(), good())
    planner = planner_for(server, cache_dir)
    planner.plan(PROMPT)
    (entry,) = cache_dir.glob("??/*.json")
    entry.write_text('{"format": 1, "key": "trunc')
    with pytest.warns(UserWarning, match="corrupt"):
        assert len(planner.plan(PROMPT).objects) == 2
    assert len(server.requests) == 2
    json.loads(entry.read_text())  # rewritten whole


def test_unwritable_cache_is_a_warning_not_an_error(server: FakeLLMServer, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    server.push(good())
    with pytest.warns(UserWarning, match="cannot write layout cache entry"):
        layout = planner_for(server, blocker).plan(PROMPT)
    assert len(layout.objects) == 2


def test_replay_answers_from_the_cache_only(server: FakeLLMServer, cache_dir: Path) -> None:
    with pytest.raises(PlannerError, match="replay mode: no cached layout"):
        planner_for(server, cache_dir, replay=True).plan(PROMPT)
    assert not server.requests
    server.push(good())
    recorded = planner_for(server, cache_dir).plan(PROMPT)
    assert planner_for(server, cache_dir, replay=True).plan(PROMPT) == recorded


def test_default_cache_dir_follows_realcompo_cache_dir(server: FakeLLMServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALCOMPO_CACHE_DIR", str(tmp_path / "rc"))
    server.push(good())
    GPTPlanner(base_url=server.openai_base_url, max_retries=0).plan(PROMPT)
    assert len(list((tmp_path / "rc" / "plans").glob("??/*.json"))) == 1


# -- packaging -------------------------------------------------------------------------------------

def test_options_forbid_typos() -> None:
    with pytest.raises(Exception, match="temprature"):
        GPTPlanner(temprature=0.2)


def test_plugin_registers_gpt_lazily() -> None:
    root = Path(__file__).resolve().parents[1]
    code = ("import sys\n"
            "from realcompo_plugin_gpt import plugin\n"
            "from realcompo_sdk.plugins import PluginLoader\n"
            "report = PluginLoader(entry_points=[], builtins=[plugin]).load()\n"
            "reg = report.registrations[('planner', 'gpt')]\n"
            "assert isinstance(reg.target, str), reg.target\n"
            "assert 'openai' not in sys.modules, 'importing the plugin imported openai'\n"
            "cls = reg.load_class()\n"
            "assert cls.__name__ == 'GPTPlanner' and cls.id == 'gpt'\n")
    env_path = f"{root}:{root.parents[1]}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={"PYTHONPATH": env_path, "PATH": ""}, timeout=60)
    assert result.returncode == 0, result.stderr


class TestGPTPlannerContract(LayoutPlannerContract):
    prompts = ("a red circle to the left of a blue square", "three apples between two cups on a white background")

    @pytest.fixture(autouse=True)
    def _server(self, tmp_path: Path) -> Iterator[None]:
        with FakeLLMServer(responder=planning_responder("openai"), lifetime=60) as fake:
            self.server, self.cache_dir = fake, tmp_path / "plans"
            yield

    def make_planner(self) -> GPTPlanner:
        return GPTPlanner(base_url=self.server.openai_base_url, cache_dir=str(self.cache_dir), max_retries=0)


def test_a_web_page_instead_of_an_api_reply_is_one_clear_error(server: FakeLLMServer, cache_dir: Path) -> None:
    from realcompo_sdk.testing.fake_llm_server import FakeReply

    server.push(FakeReply(status=200, body="<html><body>Proxy login</body></html>", headers={"content-type": "text/html"}))
    with pytest.raises(PlannerError, match=r"answered, but not with an API reply \(the body starts '<html><body>Proxy login"):
        planner_for(server, cache_dir).plan(PROMPT)
