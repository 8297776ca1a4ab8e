"""`layout-guidance` passes realcompo's L2I contract on a tiny SD folder written to disk (random
weights, no download); the contract's step is a guided one, so guidance is under test too."""

import pytest
from realcompo_sdk.testing.contracts import L2IAdapterContract
from realcompo_sdk.testing.folders import save_tiny_sd_folder

from realcompo_plugin_layout_guidance.adapter import LayoutGuidanceAdapter


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return save_tiny_sd_folder(tmp_path_factory.mktemp("realcompo_plugin_layout_guidance") / "tiny-sd", seed=0)


class TestLayoutGuidanceAdapterContract(L2IAdapterContract):
    @pytest.fixture(autouse=True)
    def _folder(self, tiny_folder):
        self.folder = tiny_folder

    def make_adapter(self):
        return LayoutGuidanceAdapter(model=str(self.folder))
