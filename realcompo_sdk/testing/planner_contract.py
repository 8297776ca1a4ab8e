"""`LayoutPlannerContract`: the tests every layout planner must pass, as a pytest mixin.

Subclass it in a test module, name the subclass ``Test...`` and provide `make_planner`::

    from realcompo_sdk.testing.planner_contract import LayoutPlannerContract

    class TestMyPlanner(LayoutPlannerContract):
        prompts = ("a red circle to the left of a blue square", "two cats")

        def make_planner(self):
            return MyPlanner()

`make_planner` may use fixtures the subclass sets up (an autouse fixture that starts a local fake
server and stores it on ``self``, for example). The contract checks that the planner has a short
lower-case `id`; that its `Options` forbid unknown keys; that `plan` returns a `Layout` for each
prompt in `prompts`, of that prompt, whose phrases are words of the prompt and whose boxes lie in
[0, 1]; that the same prompt gives the same layout twice; and that an empty prompt is a clear
`PlannerError` or `ValueError`, not a crash or an empty layout.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

import pytest
from pydantic import ValidationError

from ..errors import PlannerError
from ..interfaces import AdapterOptions, LayoutPlanner
from ..layout import Layout


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


class LayoutPlannerContract:
    """Mixin of contract tests for a `LayoutPlanner`; subclasses implement `make_planner`."""

    #: Prompts the planner is asked to plan; override to suit the planner.
    prompts: ClassVar[Sequence[str]] = (
        "a red circle to the left of a blue square",
        "two green triangles on a grey background",
    )

    def make_planner(self) -> LayoutPlanner:
        raise NotImplementedError("a LayoutPlannerContract subclass must define make_planner()")

    # -- identity and options ------------------------------------------------------------------
    def test_id_is_a_short_lower_case_string(self) -> None:
        """Users type the id on the command line."""
        planner = self.make_planner()
        planner_id = getattr(type(planner), "id", None)
        assert isinstance(planner_id, str), f"{type(planner).__name__} needs a class-level string 'id'"
        assert re.fullmatch(r"[a-z][a-z0-9_.-]{0,39}", planner_id), (
            f"planner id {planner_id!r} must be short and lower case (letters, digits, '-', '_', '.')")

    def test_options_forbid_unknown_keys(self) -> None:
        """A typo in an option is an error, never a silent default."""
        planner = self.make_planner()
        options_cls = type(planner).Options
        assert issubclass(options_cls, AdapterOptions), "Options must subclass realcompo_sdk.AdapterOptions"
        assert options_cls.model_config.get("extra") == "forbid", "Options must forbid unknown keys"
        with pytest.raises(ValidationError, match="no_such_option"):
            type(planner)(no_such_option=1)

    def test_describe_is_json_ready(self) -> None:
        """The generation record stores `describe()` as JSON."""
        import json

        description = self.make_planner().describe()
        assert description["id"] == type(self.make_planner()).id
        json.dumps(description)

    # -- planning ------------------------------------------------------------------------------
    def test_plan_returns_a_layout_of_the_prompt(self) -> None:
        """Each of `prompts` gives a `Layout` of that prompt."""
        planner = self.make_planner()
        for prompt in self.prompts:
            layout = planner.plan(prompt)
            assert isinstance(layout, Layout), f"plan({prompt!r}) returned {type(layout).__name__}, not a Layout"
            assert layout.prompt == prompt.strip()
            assert layout.objects, f"plan({prompt!r}) returned no object"

    def test_phrases_are_words_of_the_prompt(self) -> None:
        """Token positions are found in the prompt: phrases must occur in it."""
        planner = self.make_planner()
        for prompt in self.prompts:
            layout = planner.plan(prompt)
            for i, obj in enumerate(layout.objects):
                assert _normalise(obj.phrase) in _normalise(prompt), (
                    f"object {i} of plan({prompt!r}) has phrase {obj.phrase!r}, which is not in the prompt")

    def test_boxes_lie_inside_the_image(self) -> None:
        """Regions are fractions of the image, in [0, 1]."""
        planner = self.make_planner()
        for prompt in self.prompts:
            for obj in planner.plan(prompt).objects:
                box = obj.bounding_box()
                assert 0.0 <= box.x0 < box.x1 <= 1.0 and 0.0 <= box.y0 < box.y1 <= 1.0, (
                    f"{obj.phrase!r} in plan({prompt!r}) has box {box.as_tuple()} outside [0, 1] or inverted")

    def test_same_prompt_gives_the_same_layout(self) -> None:
        """Planning is repeatable (seeded, cached or deterministic)."""
        planner = self.make_planner()
        for prompt in self.prompts:
            first = planner.plan(prompt).model_dump()
            again = planner.plan(prompt).model_dump()
            assert first == again, f"plan({prompt!r}) is not repeatable"

    @pytest.mark.parametrize("empty", ["", "   ", "\n\t"])
    def test_empty_prompt_is_a_clear_error(self, empty: str) -> None:
        """An empty prompt is a PlannerError or ValueError, not a crash or an empty layout."""
        planner = self.make_planner()
        with pytest.raises((PlannerError, ValueError)) as info:
            planner.plan(empty)
        assert "prompt" in str(info.value).lower(), f"the error for an empty prompt should say so: {info.value}"
