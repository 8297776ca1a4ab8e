"""`instancediffusion`: SD1.5 conditioned on per-instance boxes, masks, points or scribbles.

Loads a folder written by `realcompo-instancediffusion convert` (see `unet.py`). Per request the
layout becomes the official 30-slot inputs (`inputs.py`), and the position net runs twice — real
inputs and the all-zero null inputs of the unconditional branch — and never again: at every step
diffusers' UNet gets the cached tokens. Fusers are on for the first `grounding_fraction` of the
steps (the official alpha), ScaleU always.

Inside RealCompo the adapter samples without MIS (the balanced loop owns one latent);
`generate` runs the model alone with the official sampler and MIS, for baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from realcompo_sdk.diffusers_loading import check_model_reference, describe_folder, low_memory_kwargs
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.interfaces import Branch, GenerationRequest, L2IAdapter, StepInfo
from realcompo_sdk.layout import Layout, RegionKind
from realcompo_sdk.unet_adapter import (
    TorchModelOptions,
    UNetAdapter,
    UNetState,
    latent_spec_from,
    place,
    resolve_device_dtype,
)

from .unet import is_instdiff_folder, load_instdiff_unet, set_grounding

MAX_INSTANCES = 30
OFFICIAL_NEGATIVE_PROMPT = (
    "longbody, lowres, bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality"
)


@dataclass(frozen=True)
class InstanceTokens:
    """The position net's grounding tokens per branch, (B, 184, D) in the UNet's dtype."""

    cond: torch.Tensor
    uncond: torch.Tensor  # from the null inputs, as the official code's uncond branch
    profile: str  # which input profile built them (box, mask, point, scribble); sample 0's in a mixed batch


class InstanceDiffusionOptions(TorchModelOptions):
    model: str | None = Field(None, description="a folder written by `realcompo-instancediffusion convert` (required)")
    base: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="SD1.5 folder or hub id for the VAE, text encoder, tokenizer and scheduler, when `model` has none",
    )
    grounding_fraction: float = Field(0.8, ge=0.0, le=1.0, description="fraction of steps with the fusers on (official alpha; README 0.8)")
    profile: Literal["auto", "box", "mask", "point", "scribble"] = Field(
        "auto", description="which official input profile to use; auto: mask > scribble > box > point, from the layout"
    )
    per_instance_modalities: bool = Field(
        False, description="non-official: allow objects of different kinds in one layout (each fills only its own inputs)"
    )
    seg_resize: Literal["nearest", "bilinear"] = Field("nearest", description="how instance masks are resized to 512² for the mask encoder")


class InstanceDiffusionAdapter(UNetAdapter, L2IAdapter):
    """Layout-to-image with InstanceDiffusion's UniFusion tokens, fusers and ScaleU."""

    id = "instancediffusion"
    Options = InstanceDiffusionOptions
    accepted_kinds: ClassVar[frozenset[RegionKind]] = frozenset({"box", "mask", "point", "scribble"})
    max_objects: ClassVar[int | None] = MAX_INSTANCES
    mixed_batches = True  # grounding tokens per sample

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        opts = self.options
        if opts.model is None:
            raise RealCompoError(
                "instancediffusion needs model=<folder converted from the official checkpoint>: download "
                "instancediffusion_sd15.pth (Hugging Face xudongw/InstanceDiffusion), run "
                "`realcompo-instancediffusion convert instancediffusion_sd15.pth OUT_DIR --sd15 stable-diffusion-v1-5/stable-diffusion-v1-5`, "
                "then pass model=OUT_DIR (CLI: --l2i-option model=OUT_DIR)."
            )
        path = check_model_reference(opts.model)
        if not path.is_dir() or not is_instdiff_folder(path):
            found = describe_folder(path) if path.is_dir() else "not a local folder"
            raise RealCompoError(
                f"{opts.model} is not a converted InstanceDiffusion folder (no instancediffusion.json; it is {found}). "
                "Convert the official checkpoint first: realcompo-instancediffusion convert instancediffusion_sd15.pth OUT_DIR "
                "(see docs/plugins/instancediffusion.md)."
            )
        device, dtype = resolve_device_dtype(opts)
        unet = load_instdiff_unet(path, dtype)
        parts_from = str(path) if (path / "text_encoder").is_dir() else opts.base
        vae, text_encoder, tokenizer, scheduler_config = _sd_parts(parts_from, dtype)
        spec = latent_spec_from(vae.config, unet.config, scheduler_config, family="sd1")
        # `unet` is already in `dtype` with its position net in float32; _setup only moves it.
        self.setup_models(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                    scheduler_config=scheduler_config, latent_spec=spec, device=device, dtype=dtype)  # fmt: skip
        self.vae = place(vae, device, dtype)

    @property
    def position_net(self) -> Any:
        return self.unet.position_net

    # ---- layout ------------------------------------------------------------------------------
    def check_layout(self, layout: Layout) -> None:
        from .inputs import choose_profile

        super().check_layout(layout)
        choose_profile(layout, profile=self.options.profile, per_instance_modalities=self.options.per_instance_modalities)

    def _inputs(self, layout: Layout, *, height: int, width: int, seed: int) -> Any:
        from .inputs import layout_to_instdiff

        opts = self.options
        return layout_to_instdiff(
            layout, width=width, height=height, profile=opts.profile, seed=seed,
            per_instance_modalities=opts.per_instance_modalities, seg_resize=opts.seg_resize,
        )  # fmt: skip

    @torch.no_grad()
    def phrase_embeddings(self, phrases: list[str]) -> torch.Tensor:
        """(N, D): each phrase alone through the text encoder, pooled at its end token."""
        ids = self.tokenizer(phrases, padding=True, truncation=True, max_length=self.tokenizer.model_max_length,
                             return_tensors="pt").input_ids.to(self.device)  # fmt: skip
        return self.text_encoder(ids).pooler_output.float()

    @torch.no_grad()
    def grounding_tokens(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(objs_cond, objs_null), each (1, 184, D) in the UNet's dtype."""
        from .inputs import InstDiffInputs

        tensors = inputs.to_torch(self.device, torch.float32)
        positive = torch.zeros(1, MAX_INSTANCES, self.unet.config.cross_attention_dim, device=self.device)
        if inputs.phrases:
            positive[0, : len(inputs.phrases)] = self.phrase_embeddings(inputs.phrases)
        cond = self.position_net(**tensors, positive_embeddings=positive, profile=inputs.profile)
        null = InstDiffInputs.null().to_torch(self.device, torch.float32)
        uncond = self.position_net(**null, positive_embeddings=torch.zeros_like(positive), profile=inputs.profile)
        return cond.to(self.dtype), uncond.to(self.dtype)

    def prepare_conditioning(self, request: GenerationRequest, state: UNetState) -> None:
        if not request.is_mixed:  # one layout: its grounding tokens, shared by the batch
            cond, uncond, profile = self._tokens(request.layout, request, request.seed)
            b = request.batch_size
            state.add(InstanceTokens(cond=cond.expand(b, -1, -1), uncond=uncond.expand(b, -1, -1), profile=profile))
            return
        # a mixed batch: each sample's tokens from its layout and its seed (as a single call with that seed)
        each = [self._tokens(lay, request, seed) for lay, seed in zip(request.sample_layouts(), request.sample_seeds())]
        state.add(InstanceTokens(cond=torch.cat([c for c, _, _ in each]), uncond=torch.cat([u for _, u, _ in each]),
                                 profile=each[0][2]))

    def _tokens(self, layout: Layout, request: GenerationRequest, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        L2IAdapter.check_layout(self, layout)  # kinds and count; _inputs checks the rest
        inputs = self._inputs(layout, height=request.height, width=request.width, seed=seed)
        cond, uncond = self.grounding_tokens(inputs)
        return cond, uncond, inputs.profile

    def unet_kwargs(self, state: UNetState, branches: tuple[Branch, ...], step: StepInfo) -> dict[str, Any]:
        set_grounding(self.unet, step.index < int(self.options.grounding_fraction * step.num_steps))
        tokens = state.get(InstanceTokens)
        return {"cross_attention_kwargs": {"gligen": {"objs": torch.cat([getattr(tokens, b) for b in branches])}}}

    # ---- standalone sampling (baselines) -----------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        layout: Layout,
        *,
        seed: int = 0,
        num_steps: int = 50,
        guidance_scale: float = 7.5,
        mis_fraction: float = 0.36,
        negative_prompt: str = OFFICIAL_NEGATIVE_PROMPT,
        height: int | None = None,
        width: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """InstanceDiffusion alone with its own sampler (PLMS, MIS): images (1, 3, H, W) in [0, 1]."""
        from .sampler import Conditioning, official_scheduler, sample_instancediffusion

        self.check_layout(layout)
        h, w = height or self.latent_spec.default_resolution[0], width or self.latent_spec.default_resolution[1]
        inputs = self._inputs(layout, height=h, width=w, seed=seed)
        cond_objs, null_objs = self.grounding_tokens(inputs)
        context, _ = self.encode_text([layout.prompt])
        uncond_context, _ = self.encode_text([negative_prompt])
        instances = []
        if mis_fraction > 0:
            for i in range(len(inputs.phrases)):
                objs, _ = self.grounding_tokens(single_instance(inputs, i))
                instances.append(Conditioning(self.encode_text([inputs.phrases[i]])[0], objs))
        f = self.latent_spec.vae_scale_factor
        generator = torch.Generator(device="cpu").manual_seed(seed)
        latents = torch.randn((1, self.latent_spec.channels, h // f, w // f), generator=generator).to(self.device, self.dtype)
        scheduler = official_scheduler()
        latents = latents * scheduler.init_noise_sigma
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=num_steps + 1, desc="instancediffusion", unit="call")
        latents = sample_instancediffusion(
            self.unet, scheduler, latents, Conditioning(context, cond_objs), Conditioning(uncond_context, null_objs),
            num_steps=num_steps, guidance_scale=guidance_scale, grounding_fraction=self.options.grounding_fraction,
            mis_fraction=mis_fraction, instance_conds=instances,
            callback=(lambda i, x: bar.update(1)) if bar is not None else None,
        )  # fmt: skip
        if bar is not None:
            bar.close()
        return self.decode(latents)


def single_instance(inputs: Any, i: int) -> Any:
    """MIS's per-instance input: instance i alone, in slot 0, the other slots empty."""
    import dataclasses

    import numpy as np

    fields = {}
    for f in dataclasses.fields(inputs):
        value = getattr(inputs, f.name)
        if isinstance(value, np.ndarray):
            alone = np.zeros_like(value)
            alone[0] = value[i]
            fields[f.name] = alone
    return dataclasses.replace(inputs, phrases=[inputs.phrases[i]], **fields)


def _sd_parts(model: str, dtype: torch.dtype) -> tuple[Any, Any, Any, dict[str, Any]]:
    """VAE, text encoder, tokenizer and scheduler config of an SD1.5 folder or hub id."""
    from diffusers import AutoencoderKL, PNDMScheduler
    from transformers import CLIPTextModel, CLIPTokenizer

    check_model_reference(model)
    try:
        vae = AutoencoderKL.from_pretrained(model, subfolder="vae", torch_dtype=dtype, **low_memory_kwargs())
        text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder", torch_dtype=dtype)
        tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        scheduler_config = dict(PNDMScheduler.load_config(model, subfolder="scheduler"))
    except OSError as exc:
        hint = "" if Path(model).exists() else " (the `base` option names where the VAE and text encoder come from)"
        raise RealCompoError(f"could not load the SD1.5 parts from {model!r}{hint}: {exc}") from exc
    return vae, text_encoder, tokenizer, scheduler_config

