"""SD3 and Flux ControlNets as L2I adapters: `sd3-controlnet-pose`, `sd3-controlnet-seg`,
`flux-controlnet-pose`, `flux-controlnet-seg`.

The layout becomes a control image exactly as for the UNet ControlNets (an OpenPose skeleton per
keypoint object; an ADE20K-coloured segmentation map of mask and box objects — the renderers of
`realcompo-plugin-controlnet`). Unlike a UNet ControlNet, an MMDiT ControlNet reads the control
image in latent space: it is VAE-encoded, shifted and scaled (and packed 2×2 for Flux), as
diffusers' SD3 / Flux ControlNet pipelines do — with one deliberate difference: the posterior
mean is used instead of a random sample, so the conditioning does not depend on a global RNG. The
ControlNet's block residuals are added to the base transformer's blocks; both CFG branches see the
control image. Union ControlNets (one network, several control types) take `control_mode`.

The base (transformer, text encoders, VAE for encoding the control image) is an `sd3` / `flux`
pipeline: loaded from ``base``, or — with ``share_with=<the T2I adapter>`` / ``sharing(t2i)``,
which `RealCompo` uses when no other base is named — the very T2I adapter it is balanced with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, Field

from realcompo_sdk.errors import LayoutError, RealCompoError
from realcompo_sdk.interfaces import Branch, GenerationRequest, L2IAdapter, LatentSpec, StepInfo, T2IAdapter
from realcompo_sdk.layout import Layout, RegionKind
from realcompo_sdk.mmdit_adapter import MMDiTOptions
from realcompo_sdk.unet_adapter import UNetState, place

from .flux import FluxAdapter, FluxModel, load_flux
from .loading import check_controlnet_folder, load_controlnet, peek_spec, read_config
from .sd3 import SD3Adapter, SD3Model, load_sd3


@dataclass(frozen=True)
class ControlLatents:
    """A request's control image in the ControlNet's input space, and the pictures it came from."""

    tensor: torch.Tensor  # SD3: (B, C, h, w) latents; Flux: packed (B, tokens, 4C) latents, or pixels for XLabs nets
    pictures: list[Any]  # PIL images, RGB, one per sample


class ControlNetFields(MMDiTOptions):
    """What every SD3 / Flux ControlNet adapter takes, besides its base model's text options."""

    controlnet: str  # folder or hub id of the ControlNet
    base: str | None = None  # the SD3 / Flux folder or hub id; None: the shared T2I's, else the family default
    conditioning_scale: float = Field(1.0, ge=0.0, description="scale of the ControlNet residuals")
    variant: str | None = None  # variant of the base model's files
    controlnet_variant: str | None = None


class SD3ControlNetOptions(ControlNetFields):
    max_sequence_length: int = Field(256, ge=1, le=512)
    t5: bool = True


class FluxControlNetOptions(ControlNetFields):
    control_mode: int | None = Field(None, ge=0, description="control type of a union ControlNet (InstantX / Shakker union: pose = 4)")
    max_sequence_length: int = Field(512, ge=1, le=512)
    default_size: int = Field(1024, ge=16)


class _MMDiTControlNet(L2IAdapter):
    """The ControlNet half, mixed into `SD3Model` / `FluxModel`: loading, the control image, checks."""

    family: ClassVar[str]
    default_base: ClassVar[str]
    t2i_class: ClassVar[type]
    options: Any
    mixed_batches = True  # one control image per sample

    @classmethod
    def peek_latent_spec(cls, options: Any) -> LatentSpec | None:
        return peek_spec(options.base, cls.family)

    def __init__(self, *, share_with: T2IAdapter | None = None, controlnet_model: Any = None, **options: Any) -> None:
        """Load the ControlNet named by `controlnet`, or use `controlnet_model` (one in memory)."""
        super().__init__(**options)
        opts = self.options
        self._check_options()
        self.shared = share_with is not None
        self.base_name = share_with.name if share_with is not None else (opts.base or self.default_base)
        if controlnet_model is None:  # from local config files first: fail before gigabytes load
            self._check_configs(self.id, opts, share_with is None)
        if share_with is not None:
            pipe, device, dtype = self._shared_pipeline(share_with)
        else:
            loader = load_sd3 if self.family == "sd3" else load_flux
            pipe, device, dtype = loader(self.base_name, opts, self.id)
            place(pipe.vae, device, dtype)
        controlnet = controlnet_model if controlnet_model is not None else \
            load_controlnet(self.family, opts.controlnet, dtype, adapter_id=self.id, variant=opts.controlnet_variant)
        _check_pair(self.id, self.family, opts.controlnet, self.base_name, dict(controlnet.config), dict(pipe.transformer.config))
        _check_mode(self.id, opts, dict(controlnet.config))
        self._setup_pipeline(pipe, device, dtype)
        self.encoder_vae = pipe.vae  # encodes the control image; an L2I adapter never decodes
        self.controlnet = place(controlnet, device, dtype)
        if getattr(controlnet.config, "use_pos_embed", True) is False:  # SD3.5 large ControlNets borrow the transformer's
            self.controlnet.pos_embed = controlnet._get_pos_embed_from_transformer(pipe.transformer).to(device, dtype)

    @classmethod
    def check_files(cls, options: Any) -> None:
        cls._check_configs(cls.id, options, with_base=True)

    @classmethod
    def _check_configs(cls, adapter_id: str, options: Any, with_base: bool) -> None:
        """The ControlNet folder's kind and control mode, and (`with_base`) its fit to the base's
        transformer, from local config files (hub ids are checked once loaded)."""
        check_controlnet_folder(cls.family, options.controlnet, adapter_id)
        controlnet = read_config(options.controlnet)
        if controlnet is None:
            return
        _check_mode(adapter_id, options, controlnet)
        base = read_config(options.base, "transformer") if with_base else None
        if base is not None:
            _check_pair(adapter_id, cls.family, options.controlnet, options.base, controlnet, base)

    @classmethod
    def sharing(cls, t2i: T2IAdapter, **options: Any) -> _MMDiTControlNet:
        """This adapter on the transformer, text encoders and VAE of `t2i` (an `sd3` / `flux` adapter)."""
        return cls(share_with=t2i, **options)

    # ---- loading -------------------------------------------------------------------------
    def _check_options(self) -> None:
        """Subclasses validate their options here, before any model is loaded."""

    def _shared_pipeline(self, t2i: Any) -> tuple[Any, torch.device, torch.dtype]:
        opts = self.options
        if not isinstance(t2i, self.t2i_class):
            raise RealCompoError(f"adapter {self.id!r} runs on a {self.family} model and can share the models of a "
                                 f"{self.t2i_class.id!r} adapter, not of {t2i.name!r} ({type(t2i).__name__}); balance it "
                                 f"with '{self.t2i_class.id}', or name its base=...")
        model = t2i.options.model
        if opts.base is not None and opts.base != model:
            raise RealCompoError(f"adapter {self.id!r}: base={opts.base!r} but share_with is {t2i.name!r} on {model!r}; "
                                 "leave base unset when sharing, or do not share.")
        for name in ("max_sequence_length", "t5", "dtype", "default_size"):
            mine, theirs = getattr(opts, name, None), getattr(t2i.options, name, None)
            if name in type(opts).model_fields and name in opts.model_fields_set and mine != theirs:
                raise RealCompoError(f"adapter {self.id!r}: {name}={mine!r} but the shared {t2i.name!r} uses {theirs!r}; "
                                     "shared models read text one way: leave it unset or set the same value.")
        if "t5" in type(opts).model_fields or "max_sequence_length" in type(opts).model_fields:
            update = {k: getattr(t2i.options, k) for k in ("t5", "max_sequence_length", "default_size") if k in type(opts).model_fields}
            self.options = opts.model_copy(update=update)
        return t2i.pipe, t2i.device, t2i.dtype

    # ---- facts ---------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["base_model"] = self.base_name
        info["family"] = self.family
        if self.shared:
            info["shares_models_with"] = self.base_name
        return info

    def check_layout(self, layout: Layout) -> None:
        if self.max_objects is not None and len(layout.objects) > self.max_objects:
            raise LayoutError(f"adapter {self.name!r} takes at most {self.max_objects} objects; the layout has "
                              f"{len(layout.objects)}. Merge or drop objects.")
        super().check_layout(layout)

    # ---- conditioning --------------------------------------------------------------------
    def render_control(self, layout: Layout, height: int, width: int) -> Any:
        """The control image (PIL, RGB) for a layout at that pixel size."""
        raise NotImplementedError

    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        from realcompo_plugin_controlnet.adapter import render_controls

        pictures, rgb = render_controls(self, request, request.height, request.width)
        pixels = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).to(self.device, self.encoder_vae.dtype)  # [-1, 1], as diffusers
        tensor = self.encode_control(pixels)
        if not request.is_mixed:
            tensor, pictures = tensor.expand(request.batch_size, *tensor.shape[1:]), pictures * request.batch_size
        state.add(ControlLatents(tensor=tensor, pictures=pictures))

    @torch.no_grad()
    def encode_control(self, pixels: torch.Tensor) -> torch.Tensor:
        """Control pixels in [-1, 1] → what the ControlNet reads."""
        vae = self.encoder_vae
        shift = 0.0 if getattr(self.controlnet.config, "force_zeros_for_pooled_projection", False) else self.latent_spec.shift_factor
        latents = vae.encode(pixels).latent_dist.mode()
        return ((latents - shift) * self.latent_spec.scaling_factor).to(self.dtype)

    def control_for(self, state: UNetState, branches: tuple[Branch, ...]) -> torch.Tensor:
        return torch.cat([state.get(ControlLatents).tensor] * len(branches))


def _check_pair(adapter_id: str, family: str, controlnet_name: str, base_name: str, controlnet: dict[str, Any],
                transformer: dict[str, Any]) -> None:
    """A ControlNet fits a transformer of its width, heads and text width; else name both."""
    def width(c: dict[str, Any]) -> int:
        return c.get("num_attention_heads", 0) * c.get("attention_head_dim", 0)

    fields = {"width": (width(controlnet), width(transformer)),
              "in_channels": (controlnet.get("in_channels"), transformer.get("in_channels"))}
    if controlnet.get("joint_attention_dim") is not None:
        fields["joint_attention_dim"] = (controlnet.get("joint_attention_dim"), transformer.get("joint_attention_dim"))
    # SD3-medium and SD3.5-medium share widths; q/k norms and position tables tell them apart
    for key in ("qk_norm", "pos_embed_max_size"):
        if key in controlnet and key in transformer:
            fields[key] = (controlnet[key], transformer[key])
    wrong = {k: v for k, v in fields.items() if v[0] != v[1]}
    if wrong:
        said = "; ".join(f"{k} {a} vs {b}" for k, (a, b) in wrong.items())
        raise RealCompoError(f"adapter {adapter_id!r}: ControlNet {controlnet_name} does not fit the {family} "
                             f"transformer of {base_name} ({said}). A ControlNet works only on the model it was "
                             "trained for (e.g. SD3-medium ControlNets on SD3-medium, SD3.5-large ones on SD3.5-large).")


def _check_mode(adapter_id: str, options: Any, config: dict[str, Any]) -> None:
    """A union ControlNet needs a control mode it knows; a single-type one takes none. Both
    mistakes run silently in diffusers (a union net without a mode reads mode 0)."""
    modes, mode = config.get("num_mode"), getattr(options, "control_mode", None)
    if modes is None and mode is not None:
        raise RealCompoError(f"adapter {adapter_id!r}: control_mode={mode} but ControlNet {options.controlnet} is not "
                             "a union ControlNet (its config has no num_mode); leave control_mode unset")
    if modes is not None and (mode is None or mode >= modes):
        raise RealCompoError(f"adapter {adapter_id!r}: ControlNet {options.controlnet} is a union ControlNet with "
                             f"{modes} control modes; set control_mode to one of 0..{modes - 1} (its model card "
                             f"lists which is which){'' if mode is None else f', not {mode}'}")


class SD3ControlNetAdapter(_MMDiTControlNet, SD3Model):
    """An `SD3ControlNetModel` on SD3 / SD3.5; subclasses render the control image."""

    family = "sd3"
    default_base = "stabilityai/stable-diffusion-3-medium-diffusers"
    t2i_class = SD3Adapter
    Options = SD3ControlNetOptions

    def transformer_kwargs(self, sample: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...],
                           embeds: torch.Tensor, pooled: torch.Tensor) -> dict[str, Any]:
        config = self.controlnet.config
        timestep = step.timestep.expand(sample.shape[0]) if torch.is_tensor(step.timestep) else \
            torch.full((sample.shape[0],), float(step.timestep), device=sample.device)
        residuals = self.controlnet(
            hidden_states=sample, timestep=timestep, controlnet_cond=self.control_for(state, branches),
            conditioning_scale=self.options.conditioning_scale,
            encoder_hidden_states=embeds if config.joint_attention_dim is not None else None,
            pooled_projections=torch.zeros_like(pooled) if config.force_zeros_for_pooled_projection else pooled,
            return_dict=False)[0]
        return {"block_controlnet_hidden_states": residuals}


class FluxControlNetAdapter(_MMDiTControlNet, FluxModel):
    """A `FluxControlNetModel` (InstantX / Shakker union and single-type nets, XLabs nets) on FLUX.1."""

    family = "flux"
    default_base = "black-forest-labs/FLUX.1-dev"
    t2i_class = FluxAdapter
    Options = FluxControlNetOptions

    @torch.no_grad()
    def encode_control(self, pixels: torch.Tensor) -> torch.Tensor:
        from diffusers import FluxPipeline

        if self.controlnet.input_hint_block is not None:  # XLabs nets read pixels through their own hint block
            return pixels.to(self.dtype)
        latents = super().encode_control(pixels)
        b, c, h, w = latents.shape
        return FluxPipeline._pack_latents(latents, b, c, h, w)

    def transformer_kwargs(self, packed: torch.Tensor, step: StepInfo, state: UNetState, common: dict[str, Any]) -> dict[str, Any]:
        n = packed.shape[0] // state.get(ControlLatents).tensor.shape[0]
        control = torch.cat([state.get(ControlLatents).tensor] * n)
        mode = None
        if self.options.control_mode is not None:
            mode = torch.full((packed.shape[0], 1), self.options.control_mode, device=packed.device, dtype=torch.long)
        guidance = None
        if self.controlnet.config.guidance_embeds:
            guidance = torch.full((packed.shape[0],), float(common["guidance_scale"]), device=packed.device, dtype=torch.float32)
        inputs = {k: v for k, v in common.items() if k != "guidance_scale"}
        blocks, single = self.controlnet(hidden_states=packed, controlnet_cond=control, controlnet_mode=mode,
                                         conditioning_scale=self.options.conditioning_scale, guidance=guidance,
                                         return_dict=False, **inputs)
        return {"controlnet_block_samples": blocks, "controlnet_single_block_samples": single,
                "controlnet_blocks_repeat": self.controlnet.input_hint_block is not None}


# ---- the registered adapters: what the layout is drawn as ----------------------------------
def _pose(layout: Layout, height: int, width: int) -> Any:
    from realcompo_plugin_controlnet.openpose import render_openpose

    return render_openpose(layout, height, width)


class _PoseMixin:
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"keypoints"})
    max_objects: ClassVar[int | None] = 16

    def render_control(self, layout: Layout, height: int, width: int) -> Any:
        return _pose(layout, height, width)


class _SegMixin:
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"mask", "box"})
    max_objects: ClassVar[int | None] = 32  # distinct label colours for unknown phrases (segmentation.MAX_OBJECTS)
    options: Any

    def _check_options(self) -> None:
        from realcompo_plugin_controlnet import segmentation

        segmentation.check_classes(self.options.classes)
        segmentation.check_palette(self.options.palette)

    def render_control(self, layout: Layout, height: int, width: int) -> Any:
        from realcompo_plugin_controlnet import segmentation

        return segmentation.render_segmentation(layout, height, width, self.options.classes, self.options.palette)


class SD3PoseOptions(SD3ControlNetOptions):
    controlnet: str = "InstantX/SD3-Controlnet-Pose"


class SegFields(BaseModel):
    """How a segmentation map colours each object, as for `controlnet-seg`."""

    classes: dict[str, str] = Field(default_factory=dict, description="phrase (or head noun) → ADE20K class name")
    palette: dict[str, tuple[int, int, int]] = Field(default_factory=dict, description="phrase → RGB label colour; wins over classes")


class SD3SegOptions(SD3ControlNetOptions, SegFields):
    pass


class FluxPoseOptions(FluxControlNetOptions):
    controlnet: str = "InstantX/FLUX.1-dev-Controlnet-Union"
    control_mode: int | None = Field(4, ge=0, description="union control type; 4 is pose for the InstantX union net")


class FluxSegOptions(FluxControlNetOptions, SegFields):
    pass


class SD3ControlNetPoseAdapter(_PoseMixin, SD3ControlNetAdapter):
    """SD3 pose ControlNet: each keypoint object is one person's OpenPose skeleton."""

    id = "sd3-controlnet-pose"
    Options = SD3PoseOptions


class SD3ControlNetSegAdapter(_SegMixin, SD3ControlNetAdapter):
    """SD3 segmentation ControlNet (bring your own checkpoint): mask and box objects painted in class colours."""

    id = "sd3-controlnet-seg"
    Options = SD3SegOptions


class FluxControlNetPoseAdapter(_PoseMixin, FluxControlNetAdapter):
    """Flux pose control: by default the union ControlNet in pose mode."""

    id = "flux-controlnet-pose"
    Options = FluxPoseOptions


class FluxControlNetSegAdapter(_SegMixin, FluxControlNetAdapter):
    """Flux segmentation ControlNet (bring your own checkpoint): mask and box objects painted in class colours."""

    id = "flux-controlnet-seg"
    Options = FluxSegOptions
