"""Testing kit for realcompo-sdk and plugin authors.

- `components`: tiny UNet / VAE / text encoder / tokenizer factories (no download);
- `fakes`: tiny real adapters (`TinyT2IAdapter`, `TinyL2IAdapter`) and a `FixedPlanner`;
- `contracts`: `T2IAdapterContract`, `L2IAdapterContract` (and `LayoutPlannerContract` in
  `planner_contract`) — pytest mixins every adapter and planner should pass;
- `reference`: the balanced loop in the official pass structure (the parity yardstick);
- `pytest_plugin`: opt-in fixtures (`pytest -p realcompo_sdk.testing.pytest_plugin`).

Importing this package imports nothing heavy; the submodules do.
"""
