"""The numbers of one generation, checked before any model loads.

`RealCompo(...)`, `RealCompo.__call__` and `realcompo generate` all validate through
`check_sampling` (what one call sets) and `check_warmup` (the balancer's warm-up against the step
count), so a bad value is one clear error up front, not a crash inside diffusers, a silently
replaced default or a noise image written with exit code 0.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .balancer import BalanceOptions
from .errors import RealCompoError
from .layout import format_validation_error

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


class SamplingSettings(BaseModel):
    """What one generation call may set. `None` means "the preset's or the model's default"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, le=MAX_SEED, description="sample b uses seed + b")
    batch_size: int = Field(1, ge=1, le=1024, description="images generated together")
    height: int | None = Field(None, ge=8, le=16384, description="pixels; None: the T2I model's default")
    width: int | None = Field(None, ge=8, le=16384, description="pixels; None: the T2I model's default")
    num_steps: int | None = Field(None, ge=1, le=1000, description="denoising steps (the schedulers have 1000)")
    guidance_scale: float | None = Field(None, ge=0, le=100, allow_inf_nan=False, description="CFG scale (1: the conditional prediction alone; for a guidance-distilled model, its guidance input)")
    mode: Literal["balanced", "t2i", "l2i"] = Field("balanced", description="RealCompo, or one model alone")
    negative_prompt: str = ""


def check_sampling(**values: Any) -> SamplingSettings:
    """`SamplingSettings(**values)`, with a `RealCompoError` naming each bad field and the rule.

    Ints must be whole numbers (3.0 is accepted, 3.5 and True are not: a bool is not a seed)."""
    bools = [k for k, v in values.items() if isinstance(v, bool)]
    if bools:
        raise RealCompoError(f"invalid generation settings: {', '.join(bools)} must be a number, not True/False")
    try:
        return SamplingSettings(**values)
    except ValidationError as exc:
        raise _error("generation settings", exc) from None


def check_balance(values: BalanceOptions | dict[str, Any]) -> BalanceOptions:
    """Balancer options with the library's one-line error style (unknown keys get a suggestion)."""
    if isinstance(values, BalanceOptions):
        return values
    import difflib

    known = list(BalanceOptions.model_fields)
    unknown = [k for k in values if k not in known]
    if unknown:
        hints = [f"{k!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, n=1)) else repr(k)
                 for k in unknown]  # fmt: skip
        raise RealCompoError(f"unknown balancer option(s) {', '.join(hints)}; known: {', '.join(known)}")
    try:
        return BalanceOptions(**values)
    except ValidationError as exc:
        raise _error("balancer options", exc) from None


def _error(what: str, exc: ValidationError) -> RealCompoError:
    """One line per bad field: its name, the rule it breaks and the value given."""
    return RealCompoError(format_validation_error(exc, what=what, show_input=True))


def check_warmup(balance: BalanceOptions, num_steps: int, mode: str) -> None:
    """A balanced run must leave the balancer at least one step after the warm-up."""
    if mode != "balanced" or balance.t0 is None or balance.t0 < num_steps:
        return
    raise RealCompoError(
        f"t0={balance.t0} is not below num_steps={num_steps}: every step would follow the L2I "
        f"model alone and the balancer would never run. Set t0 below {num_steps} (e.g. --set "
        f"t0={round(0.4 * num_steps)}, 40 % of the steps) or leave it unset."
    )
