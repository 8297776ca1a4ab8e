"""`sd`: any Stable Diffusion 1.x/2.x model — diffusers folder, hub id or single .safetensors file."""

from __future__ import annotations

from realcompo_sdk.diffusers_loading import expect_kind, load_sd_components, read_latent_spec
from realcompo_sdk.interfaces import LatentSpec, T2IAdapter
from realcompo_sdk.unet_adapter import TorchModelOptions, UNetAdapter, latent_spec_from, place, resolve_device_dtype


class SDOptions(TorchModelOptions):
    model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    variant: str | None = None  # e.g. "fp16" for hub folders that ship fp16 files
    single_file_config: str | None = None  # a diffusers folder/hub id giving configs for a single-file checkpoint


class StableDiffusionAdapter(UNetAdapter, T2IAdapter):
    """Text-to-image with an SD 1.x/2.x UNet (epsilon or v-prediction); owns the VAE."""

    id = "sd"
    Options = SDOptions
    mixed_batches = True  # no layout conditioning; UNetAdapter.prepare encodes each sample's prompt

    @classmethod
    def peek_latent_spec(cls, options: SDOptions) -> LatentSpec | None:
        return read_latent_spec(options.model)

    def __init__(self, **options: object) -> None:
        super().__init__(**options)
        opts = self.options
        expect_kind(opts.model, {"sd", "single-file"}, self.id,
                    "Use 'gligen' for GLIGEN folders and 'sdxl' for SDXL folders.")
        device, dtype = resolve_device_dtype(opts)
        parts = load_sd_components(opts.model, dtype, variant=opts.variant, single_file_config=opts.single_file_config)
        family = "sd2" if parts.text_encoder.config.hidden_size == 1024 else "sd1"
        spec = latent_spec_from(parts.vae.config, parts.unet.config, parts.scheduler_config, family=family)
        self.setup_models(unet=parts.unet, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer,
                    scheduler_config=parts.scheduler_config, latent_spec=spec, device=device, dtype=dtype)
        self.vae = place(parts.vae, device, dtype)
