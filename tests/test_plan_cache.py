"""The planners' layout cache never breaks planning: unreadable entries are a warning and a miss."""

from __future__ import annotations

import pytest

from realcompo_sdk.layout import Layout
from realcompo_sdk.planners.cache import PlanCache

KEY = "ab" + "0" * 62


@pytest.mark.parametrize("content", [bytes(range(128, 256)), b'{"format": 1, "key": "trunc'], ids=["binary", "truncated"])
def test_a_corrupt_entry_is_a_miss_with_a_warning(tmp_path, content):
    cache = PlanCache(tmp_path)
    layout = Layout.from_boxes("a cat", [("cat", (0.1, 0.1, 0.5, 0.5))])
    cache.put(KEY, layout)
    assert cache.get(KEY) == layout
    cache.path_for(KEY).write_bytes(content)
    with pytest.warns(UserWarning, match="is corrupt"):
        assert cache.get(KEY) is None
