"""Tiny SD, SDXL, GLIGEN and ControlNet folders, written once per session and loaded through diffusers."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def folders(tmp_path_factory):
    from realcompo_sdk.testing.folders import save_tiny_sd_folder
    from realcompo_sdk.testing.folders_xl import save_tiny_controlnet_folder, save_tiny_sdxl_folder

    root = tmp_path_factory.mktemp("models")
    sd = save_tiny_sd_folder(root / "sd", seed=0)
    sdxl = save_tiny_sdxl_folder(root / "sdxl", seed=0)
    return {
        "sd": sd,
        "sdxl": sdxl,
        "gligen": save_tiny_sd_folder(root / "gligen", seed=1, gligen=True),
        "cn-sd": save_tiny_controlnet_folder(root / "cn-sd", base=sd, seed=2),
        "cn-sdxl": save_tiny_controlnet_folder(root / "cn-sdxl", base=sdxl, seed=3),
    }
