"""Contract tests every diffusion adapter must pass — first-party and third-party alike.

Use as pytest mixins::

    from realcompo_sdk.testing.contracts import T2IAdapterContract

    class TestMyAdapter(T2IAdapterContract):
        def make_adapter(self):
            return MyAdapter(model=tiny_folder)

`make_adapter` is called once per test class (cached). Override `prompt`, `layout()` or the
image size attributes when the defaults do not suit the model.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pydantic
import pytest

from ..interfaces import DiffusionAdapter, GenerationRequest, L2IAdapter, LatentSpec, StepInfo, T2IAdapter
from ..layout import Box, Layout, LayoutObject

_CACHE: dict[type, Any] = {}


class _AdapterContract:
    """The tests every diffusion adapter passes: what the balancer relies on, checked on the
    adapter's own models (tiny ones in a plugin's tests).

    Subclasses implement `make_adapter`; they may override `prompt`, `layout()`,
    `guidance_scale`, `batch_size` and `steps`. Each test's docstring says what it guards.
    """

    prompt: ClassVar[str] = "a red cat to the left of a blue dog"
    guidance_scale: ClassVar[float] = 5.0
    batch_size: ClassVar[int] = 2
    steps: ClassVar[int] = 4

    def make_adapter(self) -> DiffusionAdapter:
        """The adapter under test; called once per test class, the result is cached."""
        raise NotImplementedError("subclasses return the adapter under test")

    def layout(self) -> Layout:
        """Two boxed objects whose phrases occur in `prompt`; override for other region kinds."""
        return Layout(prompt=self.prompt, objects=[
            LayoutObject(phrase="red cat", box=Box(x0=0.0, y0=0.25, x1=0.5, y1=0.75)),
            LayoutObject(phrase="blue dog", box=Box(x0=0.5, y0=0.25, x1=1.0, y1=0.75)),
        ])

    @pytest.fixture
    def adapter(self) -> DiffusionAdapter:
        """The adapter under test, made once per test class by `make_adapter`."""
        key = type(self)
        if key not in _CACHE:
            _CACHE[key] = self.make_adapter()
        return _CACHE[key]

    # helpers --------------------------------------------------------------------------------
    def _request(self, adapter: DiffusionAdapter, layout: Layout | None = None) -> GenerationRequest:
        h, w = adapter.latent_spec.default_resolution
        layout = layout or self.layout()
        return GenerationRequest(prompt=layout.prompt, negative_prompt="", layout=layout,
                                 batch_size=self.batch_size, height=h, width=w, num_steps=self.steps)

    def _latents(self, adapter: DiffusionAdapter) -> Any:
        import torch

        spec = adapter.latent_spec
        h, w = spec.default_resolution
        g = torch.Generator().manual_seed(0)
        shape = (self.batch_size, spec.channels, h // spec.vae_scale_factor, w // spec.vae_scale_factor)
        return torch.randn(shape, generator=g).to(adapter.device)

    def _step(self, adapter: DiffusionAdapter) -> StepInfo:
        sched = adapter.make_scheduler()
        h, w = adapter.latent_spec.default_resolution
        sched.set_timesteps(self.steps, **adapter.timestep_kwargs(h, w, self.steps))
        return StepInfo(index=0, num_steps=self.steps, timestep=sched.timesteps[0])

    # the contract ----------------------------------------------------------------------------
    def test_has_lowercase_string_id(self, adapter: DiffusionAdapter) -> None:
        """Users type the id on the command line; plugins register it."""
        assert isinstance(type(adapter).id, str) and type(adapter).id == type(adapter).id.lower() and type(adapter).id

    def test_options_reject_unknown_keys(self, adapter: DiffusionAdapter) -> None:
        """A typo in an option must be an error, never a silently ignored default."""
        with pytest.raises(pydantic.ValidationError):
            type(adapter).Options(definitely_not_an_option=1)

    def test_latent_spec_is_complete(self, adapter: DiffusionAdapter) -> None:
        """The compatibility check between adapters reads every field; the default size must be valid."""
        spec = adapter.latent_spec
        assert isinstance(spec, LatentSpec)
        assert spec.channels > 0 and spec.vae_scale_factor > 0 and spec.scaling_factor > 0
        assert spec.prediction_type in {"epsilon", "v_prediction", "sample", "flow"}
        h, w = spec.default_resolution
        assert h % spec.resolution_multiple == 0 and w % spec.resolution_multiple == 0

    def test_guided_noise_equals_cfg_of_separate_branches(self, adapter: DiffusionAdapter) -> None:
        """The batched forward must equal the branches run alone (the reference loop runs them
        alone), and `guided` must be CFG of them, in float32."""
        if adapter.guidance == "distilled":
            pytest.skip("guidance-distilled: no unconditional branch (test_distilled_guidance_is_one_forward)")
        state = adapter.prepare(self._request(adapter))
        x, step, s = self._latents(adapter), self._step(adapter), self.guidance_scale
        both = adapter.predict_noise(x, step, state, guidance_scale=s)
        cond = adapter.predict_noise(x, step, state, guidance_scale=s, branches=("cond",)).cond
        uncond = adapter.predict_noise(x, step, state, guidance_scale=s, branches=("uncond",)).cond
        assert both.guided is not None and both.guided.shape == x.shape
        assert both.guided.dtype.is_floating_point and str(both.guided.dtype) == "torch.float32"
        assert (both.cond - cond).abs().max() <= 1e-4
        assert (both.guided - (uncond + s * (cond - uncond))).abs().max() <= 1e-3
        if both.uncond is not None:  # optional; when given, it must be the unconditional branch
            assert (both.uncond - uncond).abs().max() <= 1e-4

    def test_distilled_guidance_is_one_forward(self, adapter: DiffusionAdapter) -> None:
        """A guidance-distilled adapter gives the guided noise from one conditional forward and
        refuses to fake an unconditional branch it does not have."""
        from ..errors import RealCompoError

        if adapter.guidance != "distilled":
            pytest.skip("classifier-free guided adapter (test_guided_noise_equals_cfg_of_separate_branches)")
        state = adapter.prepare(self._request(adapter))
        x, step = self._latents(adapter), self._step(adapter)
        pred = adapter.predict_noise(x, step, state, guidance_scale=self.guidance_scale, branches=("cond",))
        assert pred.cond.shape == x.shape and str(pred.cond.dtype) == "torch.float32"
        assert pred.guided is not None and (pred.guided - pred.cond).abs().max() == 0
        for branches in (("uncond", "cond"), ("uncond",)):
            with pytest.raises(RealCompoError, match="distilled"):
                adapter.predict_noise(x, step, state, guidance_scale=self.guidance_scale, branches=branches)

    def test_attention_maps_are_differentiable_probabilities(self, adapter: DiffusionAdapter) -> None:
        """The balancer's gradient step needs maps in [0, 1] of shape (B, J, r, r') with a
        non-zero gradient w.r.t. the latents."""
        request = self._request(adapter)
        state = adapter.prepare(request)
        phrases = [o.phrase for o in request.layout.objects]
        _, positions = adapter.phrase_token_positions(request.prompt, phrases)
        x = self._latents(adapter).requires_grad_(True)
        resolution = adapter.attention_resolutions(request.height, request.width)[0]
        maps = adapter.attention_probs(x, self._step(adapter), state, [positions] * self.batch_size, resolution)
        assert maps.shape[:3] == (self.batch_size, len(phrases), resolution)
        assert float(maps.detach().min()) >= 0 and float(maps.detach().max()) <= 1 + 1e-5
        (grad,) = __import__("torch").autograd.grad(maps.sum(), x)
        assert float(grad.abs().sum()) > 0

    def test_early_stop_gives_the_same_maps(self, adapter: DiffusionAdapter) -> None:
        """Stopping the forward after the last layer read is a speed-up, never a change."""
        request = self._request(adapter)
        state = adapter.prepare(request)
        _, positions = adapter.phrase_token_positions(request.prompt, [o.phrase for o in request.layout.objects])
        x, step = self._latents(adapter), self._step(adapter)
        for resolution in adapter.attention_resolutions(request.height, request.width):
            early = adapter.attention_probs(x, step, state, [positions] * self.batch_size, resolution)
            full = adapter.attention_probs(x, step, state, [positions] * self.batch_size, resolution, stop_early=False)
            assert (early - full).abs().max() <= 1e-5

    def test_token_positions_point_at_the_phrases(self, adapter: DiffusionAdapter) -> None:
        """Each object gets its own non-empty token positions, after the start token."""
        layout = self.layout()
        _, positions = adapter.phrase_token_positions(layout.prompt, [o.phrase for o in layout.objects])
        assert len(positions) == len(layout.objects)
        assert all(p and min(p) >= 1 for p in positions)
        assert positions[0] != positions[1]

    def test_scheduler_is_a_fresh_diffusers_scheduler(self, adapter: DiffusionAdapter) -> None:
        """Schedulers hold state (multistep solvers): each run needs its own."""
        a, b = adapter.make_scheduler(), adapter.make_scheduler()
        assert a is not b and hasattr(a, "set_timesteps") and hasattr(a, "step")


class T2IAdapterContract(_AdapterContract):
    """Contract of a text-to-image adapter: the shared tests, plus decoding."""

    def test_is_t2i(self, adapter: DiffusionAdapter) -> None:
        """The registry and `RealCompo` tell T2I from L2I by class."""
        assert isinstance(adapter, T2IAdapter)

    def test_decode_gives_images_in_unit_range(self, adapter: T2IAdapter) -> None:
        """The T2I adapter decodes the balanced latents: (B, 3, H, W) in [0, 1]."""
        images = adapter.decode(self._latents(adapter))
        h, w = adapter.latent_spec.default_resolution
        assert tuple(images.shape) == (self.batch_size, 3, h, w)
        assert float(images.min()) >= 0 and float(images.max()) <= 1


class L2IAdapterContract(_AdapterContract):
    """Contract of a layout-to-image adapter: the shared tests, plus that the layout is checked
    (kinds, object count) and really changes the noise."""

    # set False for models whose fresh (untrained) layout branch is a no-op
    layout_sensitive: ClassVar[bool] = True

    def moved_layout(self, layout: Layout) -> Layout:
        """The same objects elsewhere (in the top-left corner), each keeping its region kind."""
        from ..layout import Keypoint, Mask, Point

        def moved(o: LayoutObject) -> LayoutObject:
            if o.mask is not None:
                h, w = o.mask.shape
                rows = [[int(y < max(1, h // 5) and w // 10 <= x < max(w // 10 + 1, 3 * w // 10)) for x in range(w)]
                        for y in range(h)]
                return LayoutObject(phrase=o.phrase, mask=Mask(rows=rows))
            if o.keypoints is not None:
                return LayoutObject(phrase=o.phrase, keypoints=[
                    Keypoint(name=k.name, x=0.1 + 0.2 * k.x, y=0.2 * k.y, visible=k.visible) for k in o.keypoints])
            if o.point is not None:
                return LayoutObject(phrase=o.phrase, point=Point(x=0.15, y=0.1))
            if o.scribble is not None:
                return LayoutObject(phrase=o.phrase, scribble=[Point(x=0.1 + 0.2 * p.x, y=0.2 * p.y) for p in o.scribble])
            return LayoutObject(phrase=o.phrase, box=Box(x0=0.1, y0=0.0, x1=0.3, y1=0.2))

        return Layout(prompt=layout.prompt, objects=[moved(o) for o in layout.objects])

    def test_is_l2i_with_declared_kinds(self, adapter: DiffusionAdapter) -> None:
        """`accepted_kinds` is what `RealCompo` checks layouts against before loading."""
        assert isinstance(adapter, L2IAdapter)
        from ..layout import REGION_KINDS

        assert adapter.accepted_kinds and adapter.accepted_kinds <= set(REGION_KINDS)

    def test_rejects_too_many_objects(self, adapter: L2IAdapter) -> None:
        """A declared `max_objects` is enforced with a LayoutError naming the limit."""
        from ..errors import LayoutError

        if adapter.max_objects is None:
            pytest.skip("adapter declares no object limit")
        n = adapter.max_objects + 1
        objects = [LayoutObject(phrase="cat", box=Box(x0=0, y0=0, x1=0.5, y1=0.5))] * n
        with pytest.raises(LayoutError, match=str(adapter.max_objects)):
            adapter.check_layout(Layout(prompt="cat", objects=objects))

    def test_rejects_unaccepted_region_kinds(self, adapter: L2IAdapter) -> None:
        """An object of a kind the model cannot use is a LayoutError, not silently dropped."""
        from ..errors import LayoutError
        from ..layout import Keypoint, Mask, Point

        objects = {
            "mask": LayoutObject(phrase="cat", mask=Mask(rows=[[0, 1], [1, 1]])),
            "keypoints": LayoutObject(phrase="cat", keypoints=[Keypoint(name="nose", x=0.5, y=0.5)]),
            "point": LayoutObject(phrase="cat", point=Point(x=0.5, y=0.5)),
            "scribble": LayoutObject(phrase="cat", scribble=[Point(x=0.2, y=0.2), Point(x=0.6, y=0.7)]),
            "box": LayoutObject(phrase="cat", box=Box(x0=0, y0=0, x1=1, y1=1)),
        }
        rejected = [k for k in objects if k not in adapter.accepted_kinds]
        if not rejected:
            pytest.skip("adapter accepts every region kind")
        with pytest.raises(LayoutError, match="accepts"):
            adapter.check_layout(Layout(prompt="a cat", objects=[objects[rejected[0]]]))

    def test_layout_changes_the_conditional_noise(self, adapter: L2IAdapter) -> None:
        """Moving the objects changes the conditional noise at an early step: the layout is used."""
        if not self.layout_sensitive:
            pytest.skip("layout branch declared insensitive for this model")
        x, step = self._latents(adapter), self._step(adapter)
        layout = self.layout()
        moved = self.moved_layout(layout)
        a = adapter.predict_noise(x, step, adapter.prepare(self._request(adapter, layout)), guidance_scale=1.0, branches=("cond",)).cond
        b = adapter.predict_noise(x, step, adapter.prepare(self._request(adapter, moved)), guidance_scale=1.0, branches=("cond",)).cond
        assert float((a - b).abs().max()) > 1e-6
