"""The `claude` layout planner: Anthropic's Messages API, with the layout as a forced tool call.

The model must call one tool, ``submit_layout``, whose input schema is the reply schema derived
from the core's `Layout` model (`realcompo_sdk.planners.llm.layout_reply_schema`). An invalid tool
input is answered with a ``tool_result`` marked ``is_error`` that shows what was wrong (the one
repair round trip). A reply with ``stop_reason == "refusal"``, or without the tool call, is
reported as a refusal.

The prompt design, validation, cache and key handling are shared with the `gpt` planner
(`realcompo_sdk.planners.llm`).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from pydantic import Field

from realcompo_sdk.planners.llm import (
    TOOL_NAME,
    LLMLayoutPlanner,
    LLMPlannerOptions,
    LLMReply,
    layout_reply_schema,
    repair_message,
    system_prompt,
    user_message,
)

TOOL_DESCRIPTION = ("Submit the layout of the prompt: one object per instance, each with the words of the prompt "
                    "naming it and its box in normalised image coordinates, and the background or null.")


class ClaudePlanner(LLMLayoutPlanner):
    """Plans layouts with a Claude model (default ``claude-sonnet-5-5``) through tool use.

    The API key is read from ``ANTHROPIC_API_KEY`` (the `api_key_env` option) when a plan is made;
    a local server (`base_url` on this machine or a private network) needs none.
    """

    id: ClassVar[str] = "claude"
    provider: ClassVar[str] = "anthropic"
    provider_title: ClassVar[str] = "Anthropic"
    base_url_env: ClassVar[str] = "ANTHROPIC_BASE_URL"

    class Options(LLMPlannerOptions):
        model: str = Field("claude-sonnet-5-5", description="Claude model id")
        api_key_env: str = Field("ANTHROPIC_API_KEY", description="environment variable holding the API key")
        max_tokens: int | None = Field(2048, gt=0, description="cap on the reply's length in tokens (required "
                                                               "by the Messages API)")
        temperature: float | None = Field(None, ge=0.0, le=1.0,
                                          description="sampling temperature, sent only when set: current Messages "
                                                      "API versions have no such parameter, older models and "
                                                      "compatible servers take it")

    options: Options

    @property
    def _sdk_errors(self) -> tuple[type[BaseException], type[BaseException], type[BaseException]]:
        import anthropic

        return anthropic.APITimeoutError, anthropic.APIConnectionError, anthropic.APIStatusError

    def _make_client(self, api_key: str) -> Any:
        import anthropic

        # api_key passed explicitly: the SDK then reads no profile or other credential from disk.
        return anthropic.Anthropic(api_key=api_key, base_url=self.options.base_url, timeout=self.options.timeout,
                                   max_retries=self.options.max_retries)

    def _new_conversation(self, prompt: str) -> list[dict[str, Any]]:
        return [{"role": "user", "content": user_message(prompt)}]

    def _send(self, client: Any, messages: list[dict[str, Any]]) -> LLMReply:
        opts = self.options
        arguments: dict[str, Any] = {
            "model": opts.model,
            "max_tokens": opts.max_tokens or 2048,
            "system": system_prompt(),
            "messages": messages,
            "tools": [{"name": TOOL_NAME, "description": TOOL_DESCRIPTION, "input_schema": layout_reply_schema()}],
            "tool_choice": {"type": "tool", "name": TOOL_NAME},
        }
        if opts.temperature is not None:
            # Not a parameter of current SDK versions: sent as an extra body field for the servers that take it.
            arguments["extra_body"] = {"temperature": opts.temperature}
        message = client.messages.create(**arguments)
        self.check_api_reply(message)
        texts = [block.text for block in message.content if getattr(block, "type", None) == "text"]
        tool_uses = [block for block in message.content
                     if getattr(block, "type", None) == "tool_use" and block.name == TOOL_NAME]
        if message.stop_reason == "refusal":
            said = " ".join(texts).strip()
            return LLMReply(raw=said, data=None, refusal=said or "the model stopped with stop_reason 'refusal'",
                            native=message)
        if not tool_uses:
            said = " ".join(texts).strip()
            return LLMReply(raw=said, data=None, native=message,
                            refusal=f"the model answered in text instead of calling the {TOOL_NAME} tool: "
                                    f"{said[:500] or '(no text)'}")
        tool_input = tool_uses[0].input
        return LLMReply(raw=json.dumps(tool_input, ensure_ascii=False),
                        data=tool_input if isinstance(tool_input, dict) else json.dumps(tool_input),
                        truncated=message.stop_reason == "max_tokens", native=message)

    def _add_repair_turn(self, messages: list[dict[str, Any]], reply: LLMReply, problems: str) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        tool_use_id = None
        for block in reply.native.content:
            kind = getattr(block, "type", None)
            if kind == "text" and block.text:
                content.append({"type": "text", "text": block.text})
            elif kind == "tool_use":
                content.append({"type": "tool_use", "id": block.id, "name": block.name, "input": block.input})
                if block.name == TOOL_NAME and tool_use_id is None:
                    tool_use_id = block.id
        results = [{"type": "tool_result", "tool_use_id": block["id"], "is_error": True,
                    "content": repair_message(problems) if block["id"] == tool_use_id else "not used"}
                   for block in content if block["type"] == "tool_use"]
        return [*messages, {"role": "assistant", "content": content}, {"role": "user", "content": results}]
