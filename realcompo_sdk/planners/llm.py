"""What the LLM planners (`gpt`, `claude`, and any OpenAI-compatible server) share.

- One prompt design of our own (`SYSTEM_PROMPT`, `WORKED_EXAMPLES`): the coordinate convention,
  what a good layout is, and worked examples. The LLM never gives token positions: the core aligns
  each phrase with each adapter's tokenizer, so the LLM only copies phrases from the prompt.
- One reply schema (`layout_reply_schema`), derived from the core's `Layout` JSON schema: the
  objects keep only ``phrase`` and ``box``, the prompt is dropped (we know it), references are
  inlined and every object is closed and fully required, as OpenAI's strict structured output and
  tool-use schemas want.
- One validation (`parse_layout_reply`) and one repair round trip: an invalid reply (not JSON,
  schema violation, box out of range or inverted, no objects, a phrase not in the prompt) is shown
  back to the model with what was wrong; a second invalid reply raises `InvalidPlanError`, which
  carries the raw reply and the path of the file the exchange was saved to.
- `LLMLayoutPlanner`: the base class with the cache, API-key handling, error translation and the
  repair loop. A provider subclass only builds its client, sends a conversation and appends a
  repair turn.

API keys are read from the environment at call time and never written to a message, a log line,
the cache, a saved reply, `describe()` or an exception (`redact` scrubs SDK error texts).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import logging
import os
import re
import tempfile
from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, ValidationError

from ..errors import InvalidPlanError, MissingAPIKeyError, PlannerError, PlannerInputError, PlannerRefusalError
from ..interfaces import AdapterOptions, LayoutPlanner
from ..layout import Layout, format_validation_error
from .cache import PlanCache, atomic_write_text, cache_key, default_cache_dir

logger = logging.getLogger("realcompo_sdk.planners")

# Bump whenever the prompt design, the reply schema or the validation changes: it is part of the
# cache key, so old cached layouts are not replayed for a different planner.
PLANNER_VERSION = "1"

TOOL_NAME = "submit_layout"
SCHEMA_NAME = "layout"

SYSTEM_PROMPT = """\
You are the layout planner of a text-to-image system. For each prompt you place every object the \
prompt names in the image, as one bounding box per object instance. An image model then draws each \
object inside its box.

Coordinates are fractions of the image: the origin is the top-left corner, x grows to the right and \
y grows downwards. A box is {"x0", "y0", "x1", "y1"}: its top-left corner (x0, y0) and its \
bottom-right corner (x1, y1), with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1.

A good layout:
- has one entry per object instance: "three apples" is three entries, each with the phrase "apples";
- takes each phrase word for word from the prompt: the object's noun with the words that describe \
it (colour, size, material), without counting words or articles ("two red circles" gives "red \
circles", "a small dog" gives "small dog");
- places only things, never the scene itself: if the prompt names a background or a setting ("on a \
grey background", "on the moon"), put those words in "background" and give them no box; otherwise \
set "background" to null;
- keeps every box fully inside the image, a little away from the edges;
- gives plausible sizes: one main object spans about a third of the image side, "small" objects about \
a fifth, "big" ones about two fifths; sizes follow the real world (a cup is smaller than a table); no \
box is narrower than 5% of the image;
- makes the spatial relations of the prompt true for the box centres: "left of" means a smaller x \
centre, "above" and "on top of" a smaller y centre, "below" a larger one, "between" puts the middle \
object's centre between the others', "next to" puts them side by side;
- does not let boxes overlap, unless the prompt puts one object on, in or in front of another (a \
rider on a horse, a cat on a table).

Reply with the layout only, in the requested structure: no explanation, no token positions.
"""

# Worked examples of our own, shown to the model after the rules above.
WORKED_EXAMPLES: tuple[tuple[str, dict[str, Any]], ...] = (
    (
        "a small red circle to the left of a big blue square on a grey background",
        {"objects": [
            {"phrase": "small red circle", "box": {"x0": 0.08, "y0": 0.4, "x1": 0.3, "y1": 0.62}},
            {"phrase": "big blue square", "box": {"x0": 0.46, "y0": 0.29, "x1": 0.89, "y1": 0.72}},
        ], "background": "a grey background"},
    ),
    (
        "three apples between two cups",
        {"objects": [
            {"phrase": "cups", "box": {"x0": 0.04, "y0": 0.42, "x1": 0.24, "y1": 0.68}},
            {"phrase": "apples", "box": {"x0": 0.29, "y0": 0.48, "x1": 0.41, "y1": 0.6}},
            {"phrase": "apples", "box": {"x0": 0.44, "y0": 0.48, "x1": 0.56, "y1": 0.6}},
            {"phrase": "apples", "box": {"x0": 0.59, "y0": 0.48, "x1": 0.71, "y1": 0.6}},
            {"phrase": "cups", "box": {"x0": 0.76, "y0": 0.42, "x1": 0.96, "y1": 0.68}},
        ], "background": None},
    ),
    (
        "a cat sitting on top of a table next to a dog",
        {"objects": [
            {"phrase": "cat", "box": {"x0": 0.2, "y0": 0.22, "x1": 0.45, "y1": 0.5}},
            {"phrase": "table", "box": {"x0": 0.05, "y0": 0.5, "x1": 0.6, "y1": 0.92}},
            {"phrase": "dog", "box": {"x0": 0.66, "y0": 0.5, "x1": 0.95, "y1": 0.9}},
        ], "background": None},
    ),
    (
        "an astronaut riding a white horse on the moon",
        {"objects": [
            {"phrase": "astronaut", "box": {"x0": 0.36, "y0": 0.1, "x1": 0.62, "y1": 0.6}},
            {"phrase": "white horse", "box": {"x0": 0.14, "y0": 0.38, "x1": 0.86, "y1": 0.92}},
        ], "background": "the moon"},
    ),
)


def system_prompt(*, include_schema: bool = False) -> str:
    """The system prompt with the worked examples (and the schema, for servers without structured output)."""
    parts = [SYSTEM_PROMPT.strip(), "Examples:"]
    for prompt, reply in WORKED_EXAMPLES:
        parts.append(f"Prompt: {prompt}\nLayout: {json.dumps(reply, separators=(', ', ': '))}")
    if include_schema:
        parts.append("Your reply must be one JSON object following this JSON schema:\n"
                     + json.dumps(layout_reply_schema()))
    return "\n\n".join(parts) + "\n"


def user_message(prompt: str) -> str:
    """The user turn: the prompt between tags, so that its text is never read as instructions."""
    return f"Plan the layout of this prompt.\n<prompt>\n{prompt}\n</prompt>"


def prompt_from_user_message(text: str) -> str | None:
    """The prompt inside a `user_message` (test servers use it to answer per prompt)."""
    match = re.search(r"<prompt>\n(.*)\n</prompt>", text, re.S)
    return match.group(1) if match else None


def repair_message(problems: str) -> str:
    return ("That reply is not a valid layout. What is wrong with it:\n"
            f"{problems}\n"
            "Reply again with the whole corrected layout, in the same structure.")


# -- the reply schema, derived from the core's Layout model -------------------------------------

def layout_reply_schema() -> dict[str, Any]:
    """The JSON schema of an LLM reply: `Layout`'s schema reduced to what the LLM must say.

    From ``Layout.model_json_schema()``: drop ``prompt``; keep only ``phrase`` and ``box`` (then
    required and not nullable) in each object; inline every ``$ref``; close every object
    (``additionalProperties: false``) and require all its properties; drop titles and defaults.
    """
    full = Layout.model_json_schema()
    defs = full.get("$defs", {})
    schema = {k: v for k, v in full.items() if k != "$defs"}
    schema = copy.deepcopy(schema)
    schema["properties"].pop("prompt", None)
    schema["description"] = ("The layout of the prompt: one object per instance, each with the words of "
                             "the prompt naming it and its box; and the background, or null.")
    obj = copy.deepcopy(defs["LayoutObject"])
    box_ref = next(s for s in obj["properties"]["box"]["anyOf"] if "$ref" in s)
    obj["properties"] = {"phrase": obj["properties"]["phrase"], "box": box_ref}
    obj["description"] = "One object instance: its phrase, copied from the prompt, and its box."
    schema["properties"]["objects"]["items"] = obj
    schema["properties"]["background"]["description"] = (
        "the background or setting the prompt names, in the prompt's words (e.g. 'a grey background'), or null")
    return _closed(_inline(schema, defs))


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            return _inline(copy.deepcopy(defs[name]), defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _closed(node: Any) -> Any:
    if isinstance(node, list):
        return [_closed(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _closed(v) for k, v in node.items() if k not in ("title", "default")}
    if out.get("type") == "object" and "properties" in out:
        out["additionalProperties"] = False
        out["required"] = list(out["properties"])
    return out


# -- validation of a reply ----------------------------------------------------------------------


class NotAnAPIReply(Exception):
    """The server answered with something that is not an API reply (its start is the message)."""

class ReplyProblem(Exception):
    """A reply is not a valid layout; the message lists what is wrong, for the model and the user."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n\s*```\s*$", re.S)


def parse_layout_reply(prompt: str, reply: str | dict[str, Any]) -> Layout:
    """Validate a reply (JSON text or the parsed object) into a `Layout` of `prompt`.

    Raises `ReplyProblem` listing every problem found: not JSON, not the reply structure, a box out
    of [0, 1] or inverted, no objects, a phrase that is not words of the prompt.
    """
    data: Any = reply
    if isinstance(reply, str):
        text = reply.strip()
        fenced = _FENCE.match(text)  # local models often wrap JSON in a Markdown fence
        if fenced:
            text = fenced.group(1)
        if not text:
            raise ReplyProblem("the reply is empty; it must be a JSON object with 'objects' and 'background'")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ReplyProblem(f"the reply is not valid JSON ({exc.msg} at line {exc.lineno}, column "
                               f"{exc.colno}); it must be one JSON object with 'objects' and 'background'") from None
    if not isinstance(data, dict):
        raise ReplyProblem(f"the reply is a JSON {type(data).__name__}, not an object with 'objects' and 'background'")
    data = {k: v for k, v in data.items() if k != "prompt"}  # an echoed prompt is harmless: we use ours
    if isinstance(data.get("background"), str) and not data["background"].strip():
        data["background"] = None
    problems: list[str] = []
    objects = data.get("objects")
    if objects == []:
        problems.append("  objects: the list is empty, but the prompt names things to place; give one entry "
                        "per object instance")
    if isinstance(objects, list):
        for i, item in enumerate(objects):
            if isinstance(item, dict):
                extra = sorted(set(item) - {"phrase", "box"})
                if extra:
                    problems.append(f"  objects[{i}]: unexpected field(s) {', '.join(extra)}; an object has only "
                                    "'phrase' and 'box'")
                elif "box" not in item:
                    problems.append(f"  objects[{i}]: 'box' is missing")
    if not problems:
        try:
            layout = Layout.model_validate({"prompt": prompt, **data})
        except ValidationError as exc:
            problems.extend(format_validation_error(exc, {"prompt": prompt, **data}).splitlines()[1:])
        else:
            wanted = _normalise(prompt)
            for i, obj in enumerate(layout.objects):
                if _normalise(obj.phrase) not in wanted:
                    problems.append(f"  objects[{i}] ({obj.phrase!r}).phrase: these are not words of the prompt; "
                                    "copy the phrase naming the object word for word from the prompt")
            if not problems:
                return layout
    raise ReplyProblem("\n".join(problems))


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


# -- secrets ------------------------------------------------------------------------------------

_KEY_LIKE = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-]{12,}")


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """`text` with each secret, and anything shaped like an API key (``sk-…``), replaced by ``***``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEY_LIKE.sub("***", text)


def _safe_url(url: str | None) -> str | None:
    """A base URL without user info, query or fragment (they may carry credentials)."""
    if not url:
        return None
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"  # an IPv6 address
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def is_local_url(url: str | None) -> bool:
    """True for a server on this machine or a private network (where no real key is needed)."""
    if not url:
        return False
    host = (urlsplit(url).hostname or "").lower()
    if host in ("localhost", "host.docker.internal") or host.endswith((".localhost", ".local", ".lan", ".internal")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_link_local or address.is_unspecified


# -- the shared planner -------------------------------------------------------------------------

class LLMPlannerOptions(AdapterOptions):
    """Options every LLM planner takes. Unknown keys are an error."""

    model: str = Field(description="model name as the provider or server knows it")
    temperature: float | None = Field(0.0, ge=0.0, le=2.0,
                                      description="sampling temperature; None leaves the model's default")
    base_url: str | None = Field(None, description="API root of another server speaking the same protocol")
    timeout: float = Field(60.0, gt=0, description="seconds to wait for one HTTP answer")
    max_retries: int = Field(2, ge=0, le=20,
                             description="retries with exponential backoff (and Retry-After) on 408/409/429/5xx, "
                                         "timeouts and connection errors, done by the provider's SDK")
    max_tokens: int | None = Field(None, gt=0, description="cap on the reply's length in tokens")
    cache: bool = Field(True, description="reuse a layout planned before for the same request")
    cache_dir: str | None = Field(None, description="cache folder; default $REALCOMPO_CACHE_DIR/plans or "
                                                    "~/.cache/realcompo/plans")
    replay: bool = Field(False, description="answer only from the cache: a miss is an error, no request is sent")
    api_key_env: str = Field(description="environment variable holding the API key")


# Options that do not change the reply, or name where a secret lives: not part of the cache key.
_NOT_IN_CACHE_KEY = {"cache", "cache_dir", "replay", "timeout", "max_retries", "api_key_env", "model", "base_url"}


@dataclass
class LLMReply:
    """One model answer, as a provider subclass hands it to the shared loop."""

    raw: str  # the reply as received: JSON text, or the tool input dumped to JSON
    data: str | dict[str, Any] | None  # what to validate
    refusal: str | None = None  # set when the model declined
    truncated: bool = False  # the reply hit the token limit
    native: Any = None  # the provider's message object, for the repair turn


class LLMLayoutPlanner(LayoutPlanner):
    """Base of the LLM planners: cache, key handling, error translation, one repair round trip.

    Subclasses set `id`, `provider` (cache key and messages), `provider_title`, `base_url_env`, an
    `Options` subclass of `LLMPlannerOptions`, and implement `_make_client`, `_new_conversation`,
    `_send` and `_add_repair_turn`.
    """

    Options: ClassVar[type[LLMPlannerOptions]] = LLMPlannerOptions  # type: ignore[assignment]
    options: LLMPlannerOptions
    provider: ClassVar[str]
    provider_title: ClassVar[str]
    base_url_env: ClassVar[str]

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        # How the last `plan` call went: {"source": "cache"|"api", "repaired": bool, "cache_path": str|None}
        self.last_run: dict[str, Any] = {}

    # -- provider hooks --------------------------------------------------------------------
    @abstractmethod
    def _make_client(self, api_key: str) -> Any:
        """The provider SDK client, with this planner's base URL, timeout and retries."""

    @abstractmethod
    def _new_conversation(self, prompt: str) -> list[dict[str, Any]]:
        """The first messages for `prompt`."""

    @abstractmethod
    def _send(self, client: Any, messages: list[dict[str, Any]]) -> LLMReply:
        """Send the conversation; return the reply. SDK exceptions propagate (the base translates them)."""

    @abstractmethod
    def _add_repair_turn(self, messages: list[dict[str, Any]], reply: LLMReply, problems: str) -> list[dict[str, Any]]:
        """The conversation extended with the invalid reply and a turn showing what was wrong."""

    @property
    def _sdk_errors(self) -> tuple[type[BaseException], type[BaseException], type[BaseException]]:
        """(timeout error, connection error, HTTP status error) classes of the provider SDK."""
        raise NotImplementedError

    # -- the shared flow -------------------------------------------------------------------
    @property
    def effective_base_url(self) -> str | None:
        return self.options.base_url or os.environ.get(self.base_url_env) or None

    def plan(self, prompt: str) -> Layout:
        prompt = check_prompt(prompt, self.id)
        cache = PlanCache(self.options.cache_dir) if self.options.cache or self.options.replay else None
        key = self.cache_key(prompt)
        self.last_run = {"source": None, "repaired": False, "cache_path": None}
        if cache is not None:
            cached = cache.get(key)
            if cached is not None:
                logger.info("%s planner: layout for %r replayed from %s", self.id, prompt, cache.path_for(key))
                self.last_run.update(source="cache", cache_path=str(cache.path_for(key)))
                return cached
            if self.options.replay:
                raise PlannerError(
                    f"replay mode: no cached layout of the {self.id!r} planner (model {self.options.model!r}) for "
                    f"the prompt {prompt!r} in {cache.directory}. Run once without replay (and with the cache on) "
                    "to record it, or check cache_dir and that the options match the recorded run.")
        api_key = self._api_key()
        layout = self._plan_with_repair(prompt, api_key, key)
        self.last_run["source"] = "api"
        if cache is not None and self.options.cache:
            path = cache.put(key, layout, meta={"planner": self.id, "provider": self.provider,
                                                "model": self.options.model, "planner_version": PLANNER_VERSION,
                                                "base_url": _safe_url(self.effective_base_url)})
            self.last_run["cache_path"] = str(path) if path else None
        return layout

    def cache_key(self, prompt: str) -> str:
        options = self.options.model_dump(mode="json", exclude=_NOT_IN_CACHE_KEY)
        options["base_url"] = _safe_url(self.effective_base_url)
        return cache_key(provider=self.provider, model=self.options.model, prompt=prompt.strip(),
                         options=options, planner_version=f"{self.id}:{PLANNER_VERSION}")

    def _api_key(self) -> str:
        env = self.options.api_key_env
        key = os.environ.get(env, "").strip()
        if key:
            return key
        if is_local_url(self.effective_base_url):
            return "no-key-needed"  # local servers ignore the key, but the SDKs insist on one
        raise MissingAPIKeyError(
            f"the {self.id!r} planner needs {'an' if self.provider_title[:1] in 'AEIOU' else 'a'} "
            f"{self.provider_title} API key in the environment variable {env}, "
            f"which is not set. Set it (export {env}=...), or set base_url to a local server speaking the "
            f"{self.provider_title} protocol, which needs no key; or plan offline with the 'rules' planner.")

    def _plan_with_repair(self, prompt: str, api_key: str, key: str) -> Layout:
        client = self._make_client(api_key)
        exchange: list[dict[str, str]] = []
        try:
            messages = self._new_conversation(prompt)
            for attempt in (1, 2):
                reply = self._call(client, messages, api_key)
                if reply.refusal is not None:
                    raise PlannerRefusalError(
                        f"the {self.provider_title} model {self.options.model!r} refused to plan a layout for the "
                        f"prompt {prompt!r}: {redact(reply.refusal, [api_key])!r}. Rephrase the prompt, give a "
                        "layout by hand, or use another planner (e.g. 'rules').")
                try:
                    layout = parse_layout_reply(prompt, reply.data if reply.data is not None else reply.raw)
                except ReplyProblem as problem:
                    problems = str(problem)
                    if reply.truncated:
                        problems += "\n  (the reply was cut off at the token limit; keep it short)"
                    exchange.append({"raw_reply": redact(reply.raw, [api_key]), "problems": problems})
                    if attempt == 1:
                        logger.info("%s planner: invalid reply, asking for a repair:\n%s", self.id, problems)
                        messages = self._add_repair_turn(messages, reply, problems)
                        continue
                    raise self._invalid_plan_error(prompt, key, exchange) from None
                self.last_run["repaired"] = attempt > 1
                return layout
        finally:
            close = getattr(client, "close", None)
            if close is not None:
                close()
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def check_api_reply(reply: Any) -> None:
        """`_send` implementations call this on what the SDK returned: a server that answers 200 with
        a web page (a login proxy, a wrong base_url) makes the SDKs return the body as a string."""
        if isinstance(reply, (str, bytes)):
            text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
            raise NotAnAPIReply(" ".join(text.split())[:80])

    def _call(self, client: Any, messages: list[dict[str, Any]], api_key: str) -> LLMReply:
        timeout_error, connection_error, status_error = self._sdk_errors
        where = _safe_url(self.effective_base_url) or f"the {self.provider_title} API"
        attempts = 1 + self.options.max_retries
        try:
            return self._send(client, messages)
        except timeout_error:
            message = (f"{where} did not answer within {self.options.timeout:g} s, in {attempts} attempt(s) (the "
                       f"first and {self.options.max_retries} retries). Raise the timeout or max_retries option, "
                       "or check the server.")
        except connection_error as exc:
            message = (f"cannot connect to {where} ({redact(str(exc), [api_key])}) after {attempts} attempt(s). "
                       "Check the network, or the base_url option.")
        except status_error as exc:
            message = self._status_message(exc, where, api_key)
        except NotAnAPIReply as exc:
            message = (f"{where} answered, but not with an API reply (the body starts {redact(str(exc), [api_key])!r}). "
                       "base_url must point at the API itself (an OpenAI-compatible server's usually ends in /v1), "
                       "not at a web page or a login proxy.")
        raise PlannerError(f"the {self.id!r} planner failed: {message}") from None  # no SDK chain: it may hold secrets

    def _status_message(self, exc: BaseException, where: str, api_key: str) -> str:
        status = getattr(exc, "status_code", None)
        detail = redact(str(getattr(exc, "message", None) or exc), [api_key])
        if status in (401, 403):
            return (f"{where} rejected the API key from {self.options.api_key_env} (HTTP {status}): {detail}. "
                    "Check that the key is valid and allowed to use this model.")
        if status == 404:
            return (f"{where} answered HTTP 404: {detail}. Check the model name {self.options.model!r} and, for "
                    "another server, base_url.")
        if status == 429:
            return (f"{where} is rate limiting (HTTP 429) even after {self.options.max_retries} retries with backoff: "
                    f"{detail}. Wait and run again, or raise max_retries.")
        if status is not None and status >= 500:
            return (f"{where} had a server error (HTTP {status}) even after {self.options.max_retries} retries "
                    f"with backoff: {detail}. Try again later.")
        return f"{where} answered HTTP {status}: {detail}"

    def _invalid_plan_error(self, prompt: str, key: str, exchange: list[dict[str, str]]) -> InvalidPlanError:
        saved = self._save_failed_exchange(prompt, key, exchange)
        last = exchange[-1]
        raw = last["raw_reply"]
        shown = raw if len(raw) <= 2000 else raw[:2000] + f"... ({len(raw)} characters in all)"
        where = f"saved with the whole exchange to {saved}" if saved else "it could not be saved to a file"
        return InvalidPlanError(
            f"the {self.provider_title} model {self.options.model!r} did not return a valid layout for the prompt "
            f"{prompt!r}, even after a repair round trip that showed it what was wrong.\n"
            f"What is wrong with the last reply:\n{last['problems']}\n"
            f"Last raw reply ({where}):\n{shown}\n"
            "Try another model, give a layout by hand, or use the 'rules' planner.",
            raw_reply=raw, problems=last["problems"], saved_path=saved)

    def _save_failed_exchange(self, prompt: str, key: str, exchange: list[dict[str, str]]) -> str | None:
        record = {"planner": self.id, "provider": self.provider, "model": self.options.model,
                  "base_url": _safe_url(self.effective_base_url), "planner_version": PLANNER_VERSION,
                  "prompt": prompt, "attempts": exchange}
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{self.id}-{key[:12]}.json"
        base = Path(self.options.cache_dir).expanduser() if self.options.cache_dir else default_cache_dir()
        for folder in (base / "failed", Path(tempfile.gettempdir()) / "realcompo-failed-plans"):
            try:
                atomic_write_text(folder / name, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
                return str(folder / name)
            except OSError:
                continue
        return None


def check_prompt(prompt: str, planner_id: str) -> str:
    """The stripped prompt; an empty one is a `PlannerInputError`."""
    if not isinstance(prompt, str):
        raise PlannerInputError(f"the {planner_id!r} planner needs the prompt as a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise PlannerInputError(f"the {planner_id!r} planner got an empty prompt; give a prompt that names the "
                                "objects to place, e.g. 'a red circle to the left of a blue square'")
    return prompt.strip()

