"""Exceptions raised by realcompo-sdk.

Every error says what was wrong, where it came from (adapter, plugin, field, value) and what to do.
"""

from __future__ import annotations


class RealCompoError(Exception):
    """Base class of every error raised on purpose by realcompo-sdk."""


class LayoutError(RealCompoError, ValueError):
    """A layout is invalid for the request or for an adapter."""


class TokenAlignmentError(RealCompoError, ValueError):
    """A layout phrase could not be located in an adapter's tokenization of the prompt."""


class IncompatibleAdaptersError(RealCompoError, ValueError):
    """Two adapters cannot be balanced together (different latent spaces)."""


class UnknownPluginError(RealCompoError, LookupError):
    """No installed plugin registers the requested id."""


class PluginConflictError(RealCompoError, LookupError):
    """Several distributions register the id and none owns it: the user must name one."""


class PluginLoadError(RealCompoError):
    """A plugin failed to load; raised only in strict mode (REALCOMPO_STRICT_PLUGINS=1)."""


class PlannerError(RealCompoError):
    """A layout planner could not produce a valid layout."""


class MissingAPIKeyError(PlannerError):
    """The environment variable holding a provider's API key is not set."""


class NonFiniteNoiseError(RealCompoError, FloatingPointError):
    """An adapter predicted NaN or infinite noise."""


class PlannerInputError(PlannerError, ValueError):
    """The prompt cannot be planned: it is empty or names no object a planner can place."""


class PlannerRefusalError(PlannerError):
    """The LLM declined to plan a layout for the prompt (a refusal, not a malformed reply)."""


class InvalidPlanError(PlannerError):
    """The LLM's reply was not a valid layout, even after one repair round trip.

    `raw_reply` is the last reply as received, `problems` says what was wrong with it and
    `saved_path` is the file holding every reply and problem of the exchange (None if it could
    not be written).
    """

    def __init__(self, message: str, *, raw_reply: str, problems: str, saved_path: str | None) -> None:
        super().__init__(message)
        self.raw_reply = raw_reply
        self.problems = problems
        self.saved_path = saved_path
