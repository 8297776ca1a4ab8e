"""Testing kit for realcompo-sdk and plugin authors.

- `components`: tiny UNet / VAE / text encoder / tokenizer factories (no download);
- `folders`, `folders_xl`, `single_file`: tiny SD / GLIGEN / SDXL / ControlNet folders, and SD and
  ControlNet folders written as original-format single-file checkpoints, loaded through the real
  `from_pretrained` / `from_single_file` code paths (`single_file.unet_key_to_ldm` is the
  diffusers → LDM UNet name map);
- `plugin`: registers the tiny adapters under `tiny-t2i`, `tiny-l2i` and the planner `fixed`;
- `fake_llm_server`: a local OpenAI / Anthropic protocol server for planner tests;
- `fakes`: tiny real adapters (`TinyT2IAdapter`, `TinyL2IAdapter`) and a `FixedPlanner`;
- `contracts`: `T2IAdapterContract`, `L2IAdapterContract` (and `LayoutPlannerContract` in
  `planner_contract`) — pytest mixins every adapter and planner should pass;
- `reference`: the balanced loop in the official pass structure (the parity yardstick);
- `pytest_plugin`: opt-in fixtures (`pytest -p realcompo_sdk.testing.pytest_plugin`).

Importing this package imports nothing heavy; the submodules do.
"""
