"""The three interfaces every adapter and planner implements.

A *diffusion adapter* wraps one denoising model (a UNet with its text encoder). The balanced
sampler asks each adapter, at each step, for classifier-free-guided noise and, when it updates the
influence maps, for differentiable cross-attention probabilities of the layout's tokens. The
T2I adapter also owns the VAE that decodes the final latents. An L2I adapter additionally builds
its layout conditioning (boxes, masks or keypoints). A layout planner turns a prompt into a
`Layout`.

Nothing here imports torch: `import realcompo_sdk` stays light.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from .layout import Layout, RegionKind

if TYPE_CHECKING:
    import torch

# "flow": flow matching (SD3, Flux), the model predicts the velocity noise - x0 along x_t = (1-σ)x0 + σ·noise
PredictionType = Literal["epsilon", "v_prediction", "sample", "flow"]
Branch = Literal["cond", "uncond"]
# "cfg": classifier-free guidance, an unconditional branch mixed as uncond + s·(cond − uncond).
# "distilled": the model was trained to read the guidance scale as an input (Flux-dev) or needs none
# (Flux-schnell); one conditional forward gives the guided noise and there is no unconditional branch.
GuidanceKind = Literal["cfg", "distilled"]


class AdapterOptions(BaseModel):
    """Base of every adapter's `Options`: unknown keys are an error, not a silent default."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


@dataclass(frozen=True)
class LatentSpec:
    """What must agree between adapters balanced together."""

    channels: int
    vae_scale_factor: int
    scaling_factor: float
    prediction_type: PredictionType
    default_resolution: tuple[int, int]  # (height, width) in pixels
    family: str = "unknown"  # e.g. "sd1", "sd2", "sdxl": informational, used in error messages
    # a resolution must be a multiple of this (VAE factor x UNet downsampling, or x patch size)
    resolution_multiple: int = 64
    # latents are (z - shift_factor) * scaling_factor (SD3 and Flux VAEs shift; SD1/SDXL do not)
    shift_factor: float = 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """What an adapter needs to prepare once per request (prompt encodings, layout conditioning)."""

    prompt: str
    negative_prompt: str
    layout: Layout
    batch_size: int
    height: int
    width: int
    num_steps: int
    # Seed of the request (sample b of a batch uses seed + b): adapters that need randomness to
    # build their conditioning draw it from this, never from the global RNG.
    seed: int = 0
    # A mixed batch: one prompt, layout and seed per sample (len == batch_size); `prompt`, `layout`
    # and `seed` are then sample 0's. Empty: every sample shares them. Only adapters declaring
    # `mixed_batches = True` are given mixed requests; read them through the `sample_*` methods.
    prompts: tuple[str, ...] = ()
    layouts: tuple[Layout, ...] = ()
    seeds: tuple[int, ...] = ()
    # The sampler's guidance scale, for models that read it as an input (guidance-distilled Flux-dev)
    # rather than mixing branches; None when the caller did not say (adapters use their default).
    guidance_scale: float | None = None

    def __post_init__(self) -> None:
        for name in ("prompts", "layouts", "seeds"):
            if getattr(self, name) and len(getattr(self, name)) != self.batch_size:
                raise ValueError(f"GenerationRequest.{name} has {len(getattr(self, name))} entries for batch_size {self.batch_size}")

    @property
    def is_mixed(self) -> bool:
        """Whether samples differ in prompt or layout."""
        return bool(self.prompts or self.layouts)

    def sample_prompts(self) -> list[str]:
        """The prompt of each sample."""
        return list(self.prompts) if self.prompts else [self.prompt] * self.batch_size

    def sample_layouts(self) -> list[Layout]:
        """The layout of each sample."""
        return list(self.layouts) if self.layouts else [self.layout] * self.batch_size

    def sample_seeds(self) -> list[int]:
        """The seed of each sample."""
        return list(self.seeds) if self.seeds else [self.seed + b for b in range(self.batch_size)]


@dataclass(frozen=True)
class StepInfo:
    """Where the sampler is: step index, number of steps, and the scheduler timestep."""

    index: int
    num_steps: int
    timestep: Any  # a scalar tensor or int, as the scheduler gives it


@dataclass
class NoisePrediction:
    """One model output for a batch: guided (CFG) noise and/or the conditional branch alone.

    Tensors are float32 (float64 when the model runs in float64), shape (B, C, h, w). `guided`
    is None when only `cond` was asked for;
    `uncond` is the unconditional branch when both branches ran (adapters may leave it None).
    """

    cond: torch.Tensor
    guided: torch.Tensor | None = None
    uncond: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class DiffusionAdapter(ABC):
    """A denoising model the balancer can query. Subclass `T2IAdapter` or `L2IAdapter`.

    Subclasses set a class-level `id` (short lower-case string, e.g. ``"sd"``) and may extend the
    nested `Options` model. Adapters are constructed as ``Adapter(**options)``.
    """

    id: ClassVar[str]
    Options: ClassVar[type[AdapterOptions]] = AdapterOptions
    # True when `prepare` builds each sample's encodings from `request.sample_prompts()` and
    # `sample_layouts()`: RealCompo then batches different prompts and layouts in one forward.
    # False (the safe default): such adapters get requests whose samples share prompt and layout.
    mixed_batches: ClassVar[bool] = False
    # How this model is guided. A "distilled" adapter is only ever asked for ``branches=("cond",)``:
    # the sampler takes that output as the guided noise instead of running an unconditional pass.
    guidance: ClassVar[GuidanceKind] = "cfg"

    def __init__(self, **options: Any) -> None:
        self.options = self.Options(**options)

    @classmethod
    def peek_latent_spec(cls, options: AdapterOptions) -> LatentSpec | None:
        """The `latent_spec` these options would give, read from config files only (no weights),
        or None when that cannot be known cheaply (the default). `RealCompo` compares the
        adapters' peeked specs before loading any of them, so an incompatible pair fails in
        seconds instead of after minutes of loading."""
        return None

    @classmethod
    def check_files(cls, options: AdapterOptions) -> None:
        """Raise a `RealCompoError` when the local files these options name cannot serve this
        adapter (a folder of another model kind, a setting its config rules out), reading config
        files only. `RealCompo` calls it before loading any adapter; the default checks nothing."""
        return None

    @property
    @abstractmethod
    def latent_spec(self) -> LatentSpec:
        """Latent channels, VAE scale factor, scaling factor, prediction type, default size."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the adapter's model runs; the sampler keeps latents there."""

    @abstractmethod
    def make_scheduler(self, name: str | None = None) -> Any:
        """A fresh diffusers scheduler for this model (its own config), optionally by short name
        (``"ddim"``, ``"pndm"``, ``"euler"``, ``"dpm"``...)."""

    def timestep_kwargs(self, height: int, width: int, num_steps: int) -> dict[str, Any]:
        """Extra keyword arguments of the scheduler's `set_timesteps` for an image of that size:
        none by default; Flux's resolution-dependent shift passes ``mu`` and its ``sigmas`` here."""
        return {}

    @abstractmethod
    def prepare(self, request: GenerationRequest) -> Any:
        """Encode prompt and negative prompt (and, for L2I, the layout) once per request.

        Returns an opaque state passed back to `predict_noise` and `attention_probs`.
        """

    @abstractmethod
    def predict_noise(
        self,
        latents: torch.Tensor,
        step: StepInfo,
        state: Any,
        *,
        guidance_scale: float,
        branches: tuple[Branch, ...] = ("uncond", "cond"),
    ) -> NoisePrediction:
        """Predict noise for `latents` (B, C, h, w) at `step.timestep`.

        With both branches, uncond and cond run batched in one call (2B) and `guided` is
        ``uncond + guidance_scale * (cond - uncond)``. With ``("cond",)`` only the conditional
        branch runs. With ``("uncond",)`` only the unconditional branch runs; it is returned in
        `cond`'s slot (used by the reference loop, which runs branches separately).
        A ``guidance = "distilled"`` adapter accepts ``("cond",)`` only and returns the guided
        noise (the scale is a model input) in `cond` and `guided` both.
        """

    @abstractmethod
    def attention_probs(
        self,
        latents: torch.Tensor,
        step: StepInfo,
        state: Any,
        token_groups: list[list[list[int]]],
        resolution: int,
        *,
        stop_early: bool = True,
    ) -> torch.Tensor:
        """Cross-attention probabilities of the objects' tokens, differentiable w.r.t. `latents`.

        `token_groups[b][j]` lists the token positions of object j in sample b (per sample, since
        prompts may differ in future). Runs the conditional branch only; returns float32 (B, J, r,
        r') with r the map height (`resolution`): the probability maps averaged over heads, over
        the cross-attention layers at that resolution, and over the object's tokens. With
        `stop_early` the forward may stop after the last layer it needs.
        """

    @abstractmethod
    def attention_resolutions(self, height: int, width: int) -> list[int]:
        """Map heights at which this model has cross-attention layers for an image of that size."""

    @abstractmethod
    def phrase_token_positions(self, prompt: str, phrases: list[str], *, append_missing: bool = False) -> tuple[str, list[list[int]]]:
        """Token positions of each phrase in this adapter's tokenization of `prompt`.

        Returns the (possibly extended, when `append_missing`) prompt and one list of positions per
        phrase. Implementations normally delegate to `realcompo_sdk.tokens.align_phrases` with
        their own tokenizer. Never trust positions guessed by an LLM.
        """

    @property
    def name(self) -> str:
        """The id the user asked for (a preset's id, e.g. ``shapes-sd``), else the class id."""
        return getattr(self, "registered_id", None) or getattr(self, "id", type(self).__name__)

    def describe(self) -> dict[str, Any]:
        """What goes into the generation record (no secrets)."""
        return {"id": self.name, "class": f"{type(self).__module__}.{type(self).__qualname__}",
                "options": self.options.model_dump(mode="json")}


class T2IAdapter(DiffusionAdapter):
    """A text-to-image model. It owns the VAE that decodes the balanced latents."""

    @abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w), unscaled as the sampler produces them → images (B, 3, H, W) in
        [0, 1], float32 on the CPU."""


class L2IAdapter(DiffusionAdapter):
    """A layout-to-image model conditioned on boxes, masks or keypoints."""

    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"box"})
    max_objects: ClassVar[int | None] = None

    def check_layout(self, layout: Layout) -> None:
        """Raise `LayoutError` naming the object when the layout does not suit this adapter."""
        from .errors import LayoutError

        for i, obj in enumerate(layout.objects):
            if obj.kind not in self.accepted_kinds:
                raise LayoutError(
                    f"adapter {self.name!r} cannot use object {i} ({obj.phrase!r}): its region is "
                    f"{obj.kind}, and {self.name!r} accepts {', '.join(sorted(self.accepted_kinds))}. "
                    "Give that object a region of an accepted kind or choose another L2I adapter."
                )
        if self.max_objects is not None and len(layout.objects) > self.max_objects:
            raise LayoutError(
                f"adapter {self.name!r} takes at most {self.max_objects} objects; the layout has "
                f"{len(layout.objects)}. Merge or drop objects."
            )


class LayoutPlanner(ABC):
    """Turns a prompt into a validated `Layout`."""

    id: ClassVar[str]
    Options: ClassVar[type[AdapterOptions]] = AdapterOptions

    def __init__(self, **options: Any) -> None:
        self.options = self.Options(**options)

    @abstractmethod
    def plan(self, prompt: str) -> Layout:
        """Return a layout whose objects are phrases of `prompt` with regions.

        Raise `PlannerError` (or a subclass) with a clear message when no valid layout can be made.
        """

    def describe(self) -> dict[str, Any]:
        """What goes into the generation record (no secrets)."""
        return {"id": getattr(self, "id", type(self).__name__),
                "options": self.options.model_dump(mode="json")}
