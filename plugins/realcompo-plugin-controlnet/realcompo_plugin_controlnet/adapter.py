"""`controlnet-openpose` and `controlnet-seg`: a diffusers `ControlNetModel` on an SD 1.x or SDXL base.

The layout becomes a control image (an OpenPose skeleton per keypoint object, or an ADE20K-coloured
segmentation map of the mask and box objects), which the ControlNet turns into residuals added to the base
UNet's skip connections (``down_block_additional_residuals``) and middle block
(``mid_block_additional_residual``), as diffusers' ControlNet pipelines do: the control image goes
to both CFG branches, which run batched; the ControlNet sees the same latents, timestep, text
embeddings and (SDXL) added conditioning as the UNet.

The base model (UNet, text encoder(s), scheduler) is an `sd` or `sdxl` adapter: loaded from
``base`` (its VAE is dropped: an L2I adapter does not decode), or — with ``share_with=<that T2I
adapter>`` / ``Adapter.sharing(t2i, ...)`` — the very T2I adapter it is balanced with, so one UNet
and one set of text encoders serve both sides (the official keypoint variant: SDXL + an OpenPose
ControlNet on the same SDXL UNet). The shared modules are frozen; attention capture only swaps
processors inside its context and restores them.

The balancer's region of an object is the core's: a keypoint object's padded bounding box of its
visible keypoints, a mask object's mask (`realcompo_sdk.balancer.region_masks`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import Field

from realcompo_sdk.diffusers_loading import describe_folder, folder_kind, low_memory_kwargs, read_latent_spec
from realcompo_sdk.errors import LayoutError, RealCompoError
from realcompo_sdk.interfaces import Branch, GenerationRequest, L2IAdapter, LatentSpec, StepInfo, T2IAdapter
from realcompo_sdk.layout import Layout, RegionKind
from realcompo_sdk.unet_adapter import TorchModelOptions, UNetAdapter, UNetState, place

from . import segmentation
from .openpose import render_openpose

DEFAULT_BASES = {"sd": "stable-diffusion-v1-5/stable-diffusion-v1-5", "sdxl": "stabilityai/stable-diffusion-xl-base-1.0"}


@dataclass(frozen=True)
class ControlImage:
    """A request's control images: the tensor the ControlNet reads and the pictures it came from."""

    tensor: torch.Tensor  # (B, 3, H, W) in [0, 1], the model dtype
    pictures: list[Any]  # PIL images, RGB, one per sample

    @property
    def picture(self) -> Any:
        """Sample 0's control picture (all samples share it unless the batch is mixed)."""
        return self.pictures[0]


class ControlNetOptions(TorchModelOptions):
    controlnet: str  # folder, hub id or single .safetensors file of the ControlNet
    base: str | None = None  # SD/SDXL folder or hub id; None: the shared adapter's, else SD1.5 / SDXL base to suit the ControlNet
    conditioning_scale: float = Field(1.0, ge=0.0, description="scale of the ControlNet residuals (diffusers' controlnet_conditioning_scale)")
    variant: str | None = None  # variant of the base model's files, e.g. "fp16"
    controlnet_variant: str | None = None  # variant of the ControlNet's files
    single_file_config: str | None = None  # a diffusers ControlNet folder/hub id giving the config of a single-file ControlNet


class OpenPoseOptions(ControlNetOptions):
    controlnet: str = "lllyasviel/control_v11p_sd15_openpose"


class SegOptions(ControlNetOptions):
    controlnet: str = "lllyasviel/control_v11p_sd15_seg"
    classes: dict[str, str] = Field(default_factory=dict, description="phrase (or head noun) → ADE20K class name")
    palette: dict[str, tuple[int, int, int]] = Field(
        default_factory=dict,
        description="phrase (or head noun) → RGB label colour, for a ControlNet trained on its own label set; wins over classes",
    )


def controlnet_family_of(config: Any) -> str:
    """'sdxl' or 'sd' (1.x/2.x) for a ControlNet or UNet config (a mapping)."""
    return "sdxl" if dict(config).get("addition_embed_type") == "text_time" else "sd"


def load_controlnet(source: str, dtype: torch.dtype, *, adapter_id: str, variant: str | None = None,
                    single_file_config: str | None = None) -> Any:
    """A `ControlNetModel` from a folder, hub id or single .safetensors file, with clear errors."""
    from diffusers import ControlNetModel

    path = Path(source).expanduser()
    if path.suffix in {".safetensors", ".ckpt"}:
        if not path.exists():
            raise RealCompoError(f"adapter {adapter_id!r}: ControlNet file {path} does not exist")
        if path.suffix == ".ckpt":
            raise RealCompoError(f"{path.name}: .ckpt files are pickles that can run code; convert it to .safetensors first")
        kwargs = {"config": single_file_config} if single_file_config else {}
        try:
            return ControlNetModel.from_single_file(str(path), torch_dtype=dtype, **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            hint = ("" if single_file_config else
                    " A single-file ControlNet carries no config: diffusers guesses one from the weights and fetches "
                    "it from the hub. Offline, or for a ControlNet of another shape, pass single_file_config=<a diffusers "
                    "ControlNet folder or hub id of the same architecture>.")
            raise RealCompoError(f"adapter {adapter_id!r}: could not load the single-file ControlNet {path.name}: {exc}.{hint}") from exc
    if not path.exists() and (source.startswith((".", "/", "~")) or source.count("/") != 1):
        raise RealCompoError(f"adapter {adapter_id!r}: ControlNet {source!r} is neither an existing folder nor a hub id of the form 'owner/name'")
    if path.exists():
        config = path / "config.json"
        found = json.loads(config.read_text()).get("_class_name") if config.exists() else None
        if found != "ControlNetModel":
            what = f"a diffusers {found} folder" if found else describe_folder(path)
            raise RealCompoError(
                f"adapter {adapter_id!r} cannot load ControlNet {source}: it is {what}, not a ControlNet folder "
                "(config.json with _class_name 'ControlNetModel'). Pass the ControlNet as controlnet=... and the "
                "SD/SDXL model as base=..."
            )
    try:
        return ControlNetModel.from_pretrained(source, torch_dtype=dtype, variant=variant, **low_memory_kwargs())
    except OSError as exc:
        raise RealCompoError(f"adapter {adapter_id!r}: could not load ControlNet {source!r}: {exc}") from exc


def _describe_model(config: dict[str, Any]) -> str:
    return (f"{controlnet_family_of(config)} (cross_attention_dim {config.get('cross_attention_dim')}, "
            f"block_out_channels {list(config.get('block_out_channels', ()))})")


class ControlNetAdapter(UNetAdapter, L2IAdapter):
    """Layout-to-image with a ControlNet on an SD 1.x / SDXL base; subclasses render the control image."""

    Options = ControlNetOptions
    options: ControlNetOptions
    mixed_batches = True  # one control image per sample

    @classmethod
    def peek_latent_spec(cls, options: ControlNetOptions) -> LatentSpec | None:
        # the latents are the base model's; with no base it shares the T2I's (checked when it loads)
        return read_latent_spec(options.base)

    def __init__(self, *, share_with: T2IAdapter | None = None, **options: Any) -> None:
        super().__init__(**options)
        opts = self.options
        self._check_options()
        if share_with is not None:
            base = self._check_shareable(share_with)
            self.shared = True
        else:
            base = None
            self.shared = False
        dtype = base.dtype if base is not None else _requested_dtype(opts)
        controlnet = load_controlnet(opts.controlnet, dtype, adapter_id=self.id, variant=opts.controlnet_variant,
                                     single_file_config=opts.single_file_config)
        self._controlnet_config = dict(controlnet.config)
        family = controlnet_family_of(self._controlnet_config)
        if base is None:
            base = self._load_base(family)
        self._check_pair(self._controlnet_config, base.unet.config, getattr(base.options, "model", "?"),
                         base.name if self.shared else None)
        self.base = base
        self.setup_models(unet=base.unet, text_encoder=base.text_encoder, tokenizer=base.tokenizer,
                    scheduler_config=base.scheduler_config, latent_spec=base.latent_spec,
                    device=base.device, dtype=base.dtype)
        self.controlnet = place(controlnet, base.device, base.dtype)
        n = len(controlnet.config.conditioning_embedding_out_channels)
        self.control_factor = 2 ** (n - 1)  # pixels of control image per latent cell

    @classmethod
    def sharing(cls, t2i: T2IAdapter, **options: Any) -> ControlNetAdapter:
        """This adapter on the UNet and text encoder(s) of `t2i` (an `sd` or `sdxl` adapter), in memory."""
        return cls(share_with=t2i, **options)

    # ---- loading -------------------------------------------------------------------------
    def _check_options(self) -> None:
        """Subclasses validate their options here, before any model is loaded."""

    def _check_shareable(self, t2i: Any) -> Any:
        opts = self.options
        if not isinstance(t2i, UNetAdapter) or not isinstance(t2i, T2IAdapter):
            raise RealCompoError(f"adapter {self.id!r} can share the models of an 'sd' or 'sdxl' adapter, not of {type(t2i).__name__}")
        model = getattr(t2i.options, "model", None)
        if opts.base is not None and opts.base != model:
            raise RealCompoError(
                f"adapter {self.id!r}: base={opts.base!r} but share_with is {t2i.name!r} on {model!r}; "
                "leave base unset when sharing, or do not share."
            )
        want = torch.device(opts.device) if opts.device != "auto" else None
        if want is not None and (want.type != t2i.device.type or
                                 (want.index is not None and want.index != (t2i.device.index or 0))):
            raise RealCompoError(f"adapter {self.id!r}: device={opts.device!r} but the shared {t2i.name!r} runs on {t2i.device}")
        if opts.dtype != "auto" and getattr(torch, opts.dtype) != t2i.dtype:
            raise RealCompoError(f"adapter {self.id!r}: dtype={opts.dtype!r} but the shared {t2i.name!r} runs in {t2i.dtype}")
        return t2i

    def _load_base(self, family: str) -> Any:
        from realcompo_plugin_sd.adapter import StableDiffusionAdapter
        from realcompo_plugin_sd.sdxl import StableDiffusionXLAdapter

        opts = self.options
        model = opts.base or DEFAULT_BASES[family]
        try:
            kind = folder_kind(model)
        except RealCompoError as exc:
            raise RealCompoError(f"adapter {self.id!r}, base={model!r}: {exc}") from exc
        if kind == "gligen":
            raise RealCompoError(f"adapter {self.id!r}: base {model} is a GLIGEN folder (gated UNet); use a plain "
                                 f"{family} model as the ControlNet's base")
        if kind in {"sd", "sdxl"} and kind != family:
            raise RealCompoError(
                f"adapter {self.id!r}: ControlNet {opts.controlnet} is an {family} ControlNet but base {model} is "
                f"an {kind} model folder; use an {kind} ControlNet with this base, or an {family} base."
            )
        if kind != "single-file":  # read the UNet config (a small file) before loading any weights
            from diffusers import UNet2DConditionModel

            try:
                unet_config = UNet2DConditionModel.load_config(model, subfolder="unet")
            except OSError:
                unet_config = None  # the base adapter reports what is wrong
            if unet_config is not None:
                self._check_pair(self._controlnet_config, unet_config, model)
        cls = StableDiffusionXLAdapter if family == "sdxl" else StableDiffusionAdapter
        base = cls(model=model, device=opts.device, dtype=opts.dtype, variant=opts.variant, check_finite=opts.check_finite)
        base.vae = None  # an L2I adapter never decodes: free the VAE
        return base

    def _check_pair(self, controlnet_config: Any, unet_config: Any, base_model: Any, shared_with: str | None = None) -> None:
        """A ControlNet fits a UNet of its own family and widths; else name both."""
        c, u = dict(controlnet_config), dict(unet_config)
        fields = ("cross_attention_dim", "in_channels")
        same = (controlnet_family_of(c) == controlnet_family_of(u) and all(c.get(f) == u.get(f) for f in fields)
                and list(c.get("block_out_channels", ())) == list(u.get("block_out_channels", ())))
        if not same:
            where = f"shared adapter {shared_with!r} on" if shared_with else "base"
            raise RealCompoError(
                f"adapter {self.id!r}: ControlNet {self.options.controlnet} is an {_describe_model(c)} ControlNet, "
                f"but the {where} {base_model} is an {_describe_model(u)} model. "
                "A ControlNet only works on the model family it was trained for (SD1.5 ControlNets on SD1.x, "
                "SDXL ControlNets on SDXL)."
            )

    # ---- facts ---------------------------------------------------------------------------
    def phrase_token_positions(self, prompt: str, phrases: list[str], *, append_missing: bool = False) -> tuple[str, list[list[int]]]:
        return self.base.phrase_token_positions(prompt, phrases, append_missing=append_missing)

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info["base_model"] = getattr(self.base.options, "model", None)
        info["family"] = self.latent_spec.family
        if self.shared:
            info["shares_models_with"] = self.base.name
        return info

    def check_layout(self, layout: Layout) -> None:
        if self.max_objects is not None and len(layout.objects) > self.max_objects:
            raise LayoutError(
                f"adapter {self.name!r} takes at most {self.max_objects} objects; the layout has "
                f"{len(layout.objects)}. Merge or drop objects."
            )
        super().check_layout(layout)

    # ---- conditioning --------------------------------------------------------------------
    def render_control(self, layout: Layout, height: int, width: int) -> Any:
        """The control image (PIL, RGB) for a layout at that pixel size."""
        raise NotImplementedError

    def prepare(self, request: GenerationRequest) -> UNetState:
        state = self.base.prepare(request)  # text (and SDXL added) conditioning, exactly as the base model's
        self.prepare_conditioning(request, state)
        return state

    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        f = self.latent_spec.vae_scale_factor
        height = request.height // f * self.control_factor
        width = request.width // f * self.control_factor
        pictures, rgb = render_controls(self, request, height, width)
        control = torch.from_numpy(rgb.astype(np.float32) / 255.0).to(self.device, self.dtype)  # [0, 1], as diffusers
        if not request.is_mixed:
            control, pictures = control.expand(request.batch_size, -1, -1, -1), pictures * request.batch_size
        state.add(ControlImage(tensor=control, pictures=pictures))

    def unet_kwargs(self, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> dict[str, Any]:
        return self.base.unet_kwargs(state, branches, step)

    def run_unet(self, latents: torch.Tensor, step: StepInfo, state: UNetState, branches: tuple[Branch, ...]) -> torch.Tensor:
        n = len(branches)
        sample = torch.cat([latents] * n).to(self.dtype)
        embeds = torch.cat([state.cond if b == "cond" else state.uncond for b in branches])
        kwargs = self.unet_kwargs(state, branches, step)
        # both branches see the control image, as in diffusers' ControlNet pipelines (guess_mode off)
        down, mid = self.controlnet(sample, step.timestep, encoder_hidden_states=embeds,
                                    controlnet_cond=torch.cat([state.get(ControlImage).tensor] * n),
                                    conditioning_scale=self.options.conditioning_scale,
                                    added_cond_kwargs=kwargs.get("added_cond_kwargs"), return_dict=False)
        return self.unet(sample, step.timestep, encoder_hidden_states=embeds, down_block_additional_residuals=down,
                         mid_block_additional_residual=mid, return_dict=False, **kwargs)[0]


def render_controls(adapter: Any, request: GenerationRequest, height: int, width: int) -> tuple[list[Any], np.ndarray]:
    """Check each layout and draw its control picture with `adapter.check_layout` /
    `adapter.render_control`: the pictures (one per sample in a mixed batch, else one) and their
    RGB values stacked as uint8 (n, 3, height, width). Shared with the SD3 / Flux ControlNets."""
    layouts = request.sample_layouts() if request.is_mixed else [request.layout]
    pictures = []
    for layout in layouts:
        adapter.check_layout(layout)
        pictures.append(adapter.render_control(layout, height, width))
    rgb = np.stack([np.asarray(p.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1) for p in pictures])
    return pictures, rgb


def _requested_dtype(opts: ControlNetOptions) -> torch.dtype:
    from realcompo_sdk.unet_adapter import resolve_device_dtype

    return resolve_device_dtype(opts)[1]


class ControlNetOpenPoseAdapter(ControlNetAdapter):
    """OpenPose ControlNet: each keypoint object is one person's skeleton (COCO-18)."""

    id = "controlnet-openpose"
    Options = OpenPoseOptions
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"keypoints"})
    max_objects: ClassVar[int | None] = 16  # people per image: a sanity cap, far above what pose ControlNets draw well

    def render_control(self, layout: Layout, height: int, width: int) -> Any:
        return render_openpose(layout, height, width)


class ControlNetSegAdapter(ControlNetAdapter):
    """Segmentation ControlNet: each mask (or box) object is painted in its ADE20K class colour."""

    id = "controlnet-seg"
    Options = SegOptions
    options: SegOptions
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"mask", "box"})
    max_objects: ClassVar[int | None] = segmentation.MAX_OBJECTS  # distinct colours for unknown phrases

    def _check_options(self) -> None:
        segmentation.check_classes(self.options.classes)
        segmentation.check_palette(self.options.palette)

    def render_control(self, layout: Layout, height: int, width: int) -> Any:
        return segmentation.render_segmentation(layout, height, width, self.options.classes, self.options.palette)
