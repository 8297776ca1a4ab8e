"""The `gpt` layout planner: OpenAI chat completions with structured output.

The reply is constrained by a strict JSON schema derived from the core's `Layout` model
(`realcompo_sdk.planners.llm.layout_reply_schema`). With `base_url` the same planner talks to any
server speaking the OpenAI chat-completions protocol: vLLM, the llama.cpp server, Ollama, LM Studio,
LiteLLM... That is the local-LLM planner. Servers without JSON-schema support can use
``structured_output="json_object"`` or ``"none"``; the schema is then written into the prompt and
the reply is validated all the same.

The prompt design, validation, the repair round trip, the cache and the key handling are shared
with the `claude` planner (`realcompo_sdk.planners.llm`).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from realcompo_sdk.planners.llm import (
    SCHEMA_NAME,
    LLMLayoutPlanner,
    LLMPlannerOptions,
    LLMReply,
    layout_reply_schema,
    repair_message,
    system_prompt,
    user_message,
)


class GPTPlanner(LLMLayoutPlanner):
    """Plans layouts with an OpenAI chat model (default ``gpt-4o``) or an OpenAI-compatible server.

    The API key is read from ``OPENAI_API_KEY`` (the `api_key_env` option) when a plan is made;
    a local server (`base_url` on this machine or a private network) needs none.
    """

    id: ClassVar[str] = "gpt"
    provider: ClassVar[str] = "openai"
    provider_title: ClassVar[str] = "OpenAI"
    base_url_env: ClassVar[str] = "OPENAI_BASE_URL"

    class Options(LLMPlannerOptions):
        model: str = Field("gpt-4o", description="OpenAI model name, or the model a compatible server serves")
        api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the API key")
        structured_output: Literal["json_schema", "json_object", "none"] = Field(
            "json_schema",
            description="how the reply is constrained: a strict JSON schema (OpenAI, vLLM, llama.cpp, Ollama), "
                        "JSON mode only, or nothing (the schema is then given in the prompt)")
        seed: int | None = Field(None, description="sampling seed, for servers that honour it")

    options: Options

    @property
    def _sdk_errors(self) -> tuple[type[BaseException], type[BaseException], type[BaseException]]:
        import openai

        return openai.APITimeoutError, openai.APIConnectionError, openai.APIStatusError

    def _status_message(self, exc: BaseException, where: str, api_key: str) -> str:
        message = super()._status_message(exc, where, api_key)
        if getattr(exc, "status_code", None) in (400, 422) and self.options.structured_output == "json_schema" \
                and self.effective_base_url:
            message += (" If this server does not support JSON-schema output, set the option "
                        "structured_output=json_object (or none).")
        return message

    def _make_client(self, api_key: str) -> Any:
        import openai

        return openai.OpenAI(api_key=api_key, base_url=self.options.base_url, timeout=self.options.timeout,
                             max_retries=self.options.max_retries)

    def _new_conversation(self, prompt: str) -> list[dict[str, Any]]:
        include_schema = self.options.structured_output != "json_schema"
        return [{"role": "system", "content": system_prompt(include_schema=include_schema)},
                {"role": "user", "content": user_message(prompt)}]

    def _request_arguments(self) -> dict[str, Any]:
        opts = self.options
        arguments: dict[str, Any] = {"model": opts.model}
        if opts.structured_output == "json_schema":
            arguments["response_format"] = {"type": "json_schema", "json_schema": {
                "name": SCHEMA_NAME, "strict": True, "schema": layout_reply_schema()}}
        elif opts.structured_output == "json_object":
            arguments["response_format"] = {"type": "json_object"}
        if opts.temperature is not None:
            arguments["temperature"] = opts.temperature
        if opts.max_tokens is not None:
            arguments["max_tokens"] = opts.max_tokens
        if opts.seed is not None:
            arguments["seed"] = opts.seed
        return arguments

    def _send(self, client: Any, messages: list[dict[str, Any]]) -> LLMReply:
        completion = client.chat.completions.create(messages=messages, **self._request_arguments())
        self.check_api_reply(completion)
        if not completion.choices:
            return LLMReply(raw="", data="")
        choice = completion.choices[0]
        message = choice.message
        refusal = getattr(message, "refusal", None)
        if refusal:
            return LLMReply(raw=refusal, data=None, refusal=refusal)
        if choice.finish_reason == "content_filter":
            return LLMReply(raw=message.content or "", data=None,
                            refusal="the reply was stopped by the provider's content filter")
        content = message.content or ""
        return LLMReply(raw=content, data=content, truncated=choice.finish_reason == "length")

    def _add_repair_turn(self, messages: list[dict[str, Any]], reply: LLMReply, problems: str) -> list[dict[str, Any]]:
        return [*messages, {"role": "assistant", "content": reply.raw},
                {"role": "user", "content": repair_message(problems)}]
