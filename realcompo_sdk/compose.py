"""The Python API: compose a T2I adapter, one or more L2I adapters and a planner by id or instance.

    from realcompo_sdk import RealCompo
    rc = RealCompo(t2i="sd", l2i="gligen", planner="claude")
    result = rc("a corgi to the left of a red ball", seed=1)
    result.images[0].save("out.png"); print(result.record.model_dump_json(indent=2))

Compatibility of the adapters is checked before any model runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from .balancer import BalanceOptions
from .errors import IncompatibleAdaptersError, LayoutError, RealCompoError
from .interfaces import DiffusionAdapter, GenerationRequest, L2IAdapter, LatentSpec, LayoutPlanner, T2IAdapter
from .layout import Layout, format_validation_error
from .record import GenerationRecord, environment_versions
from .settings import SamplingSettings, check_balance, check_sampling, check_warmup

DEFAULT_T2I, DEFAULT_L2I, DEFAULT_PLANNER = "shapes-sd", "shapes-controlnet", "rules"


@dataclass
class GenerationResult:
    """What a call returns: the images, the record of how they were made (also written into
    each PNG), the influence maps when asked for, and the final latents."""

    images: list[Any]  # PIL images
    record: GenerationRecord
    influence: list[Any] = field(default_factory=list)  # per step (K, B, 1, h, w) weights, on request
    latents: Any = None


def _preset_generation(t2i: Any) -> dict[str, Any]:
    """The sampling settings a T2I preset recommends, read from its registration (no weights load)."""
    if isinstance(t2i, str):
        from . import registry

        return dict(registry.lookup("t2i", t2i).generation)
    return dict(getattr(t2i, "generation_defaults", None) or {})


_KIND_TITLES = {"t2i": "T2I adapter", "l2i": "L2I adapter"}


def _check_before_loading(t2i: Any, t2i_options: dict[str, Any] | None, l2i: list[Any], l2i_options: list[Any],
                          planner: Any) -> None:
    """Unknown ids, invalid adapter options, files of the wrong kind and adapters from different
    latent spaces fail before any model loads: lookups, the adapters' `Options`, `check_files` and
    `peek_latent_spec` read no weights."""
    from . import registry

    peeked: list[tuple[str, str, LatentSpec] | None] = []  # (label, id, spec) per adapter, T2I first
    for kind, value, options in [("t2i", t2i, t2i_options), *(("l2i", v, o) for v, o in zip(l2i, l2i_options))]:
        if not isinstance(value, str):  # an instance: already loaded, its spec is known
            known = getattr(value, "latent_spec", None)
            peeked.append((_label(value), value.name, known) if isinstance(known, LatentSpec) else None)
            continue
        peeked.append(None)
        reg = registry.lookup(kind, value)
        cls = reg.load_class()
        options_model = getattr(cls, "Options", None)
        if options_model is None:
            continue
        try:
            parsed = options_model(**{**reg.options, **(options or {})})
        except ValidationError as exc:
            what = f"options of {_KIND_TITLES[kind]} {value!r} (see `realcompo plugins` and its docs)"
            raise RealCompoError(format_validation_error(exc, what=what)) from None
        if hasattr(cls, "check_files"):
            cls.check_files(parsed)
        spec = cls.peek_latent_spec(parsed) if hasattr(cls, "peek_latent_spec") else None
        if spec is not None:
            peeked[-1] = (f"{_KIND_TITLES[kind]} {value!r}", value, spec)
    if peeked[0] is not None:
        for other in peeked[1:]:
            mismatch = other and _spec_mismatch(*peeked[0], *other)
            if mismatch:
                raise IncompatibleAdaptersError(f"{mismatch} (read from the models' config files, before loading any weights)")
    if isinstance(planner, str):
        registry.lookup("planner", planner)


def _resolve(kind: str, value: Any, options: dict[str, Any] | None, base: type) -> Any:
    from . import registry

    if isinstance(value, str):
        instance = registry.create(kind, value, **(options or {}))
    else:
        if options:
            raise RealCompoError(f"options for an adapter instance ({type(value).__name__}) must be set when creating it")
        instance = value
    if not isinstance(instance, base):
        raise RealCompoError(f"{value!r} is not a {base.__name__} (got {type(instance).__name__})")
    return instance


def _resolve_l2i(value: Any, options: dict[str, Any] | None, t2i: T2IAdapter) -> L2IAdapter:
    """An L2I adapter by id or instance. An L2I class may offer `sharing(t2i, **options)` to run
    on the T2I adapter's own UNet and text encoders (ControlNet on its base model, as in the
    official keypoint variant); by id, it is used unless the options name another `base`."""
    from . import registry

    if not isinstance(value, str):
        return _resolve("l2i", value, options, L2IAdapter)
    reg = registry.lookup("l2i", value)
    cls = reg.load_class()
    merged = {**reg.options, **(options or {})}
    sharing = getattr(cls, "sharing", None)
    if callable(sharing) and merged.get("base") in (None, getattr(t2i.options, "model", None)):
        instance = sharing(t2i, **{k: v for k, v in merged.items() if k != "base"})
        if getattr(cls, "id", None) != value:
            instance.registered_id = value
        return instance
    return _resolve("l2i", value, options, L2IAdapter)


def check_compatible(t2i: DiffusionAdapter, l2is: list[DiffusionAdapter], height: int, width: int) -> None:
    """Raise `IncompatibleAdaptersError` naming both adapters and the differing field."""
    for other in l2is:
        mismatch = _spec_mismatch(_label(t2i), t2i.name, t2i.latent_spec, _label(other), other.name, other.latent_spec)
        if mismatch:
            raise IncompatibleAdaptersError(mismatch)
    for adapter in [t2i, *l2is]:
        m = adapter.latent_spec.resolution_multiple
        if height % m or width % m:
            raise IncompatibleAdaptersError(
                f"resolution {width}x{height} is not a multiple of {m} required by {_label(adapter)} "
                f"(VAE factor x UNet downsampling or patch size); try {width // m * m or m}x{height // m * m or m}."
            )


def _spec_mismatch(label_a: str, name_a: str, a: LatentSpec, label_b: str, name_b: str, b: LatentSpec) -> str | None:
    """Why two adapters cannot be balanced (the first latent fact that differs), or None."""
    for field_name in ("channels", "vae_scale_factor", "scaling_factor", "shift_factor", "prediction_type"):
        va, vb = getattr(a, field_name), getattr(b, field_name)
        same = abs(va - vb) <= 1e-6 * max(abs(va), 1.0) if isinstance(va, float) else va == vb
        if not same:
            return (f"{label_a} and {label_b} live in different latent spaces: {field_name} is "
                    f"{va!r} for {name_a!r} ({a.family}) but {vb!r} for {name_b!r} ({b.family}). "
                    "Balance models of the same family (e.g. SD1.x with SD1.x-based L2I models).")
    return None


def _label(adapter: DiffusionAdapter) -> str:
    kind = "T2I" if isinstance(adapter, T2IAdapter) else "L2I"
    return f"{kind} adapter {getattr(adapter, 'registered_id', adapter.name)!r}"


class RealCompo:
    """Balanced generation with a T2I adapter, L2I adapter(s) and a planner (ids or instances)."""

    def __init__(
        self,
        t2i: str | T2IAdapter = DEFAULT_T2I,
        l2i: str | L2IAdapter | list[str | L2IAdapter] = DEFAULT_L2I,
        planner: str | LayoutPlanner | None = DEFAULT_PLANNER,
        *,
        t2i_options: dict[str, Any] | None = None,
        l2i_options: dict[str, Any] | list[dict[str, Any]] | None = None,
        planner_options: dict[str, Any] | None = None,
        balance: BalanceOptions | dict[str, Any] | None = None,
        scheduler: str | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        append_missing_phrases: bool = False,
    ) -> None:
        """`num_steps`, `guidance_scale`, `scheduler` and `balance` left unset take the T2I preset's
        recommended values (a registration's ``generation=``, e.g. the bundled `shapes-sd`), else 50
        steps, guidance 7.5, the model's scheduler and the paper's balancer defaults; a `balance`
        dict overrides the preset's balancer settings key by key."""
        # Every number is checked before any adapter loads its weights (settings.py).
        check_sampling(num_steps=num_steps, guidance_scale=guidance_scale)
        preset = _preset_generation(t2i)
        if isinstance(balance, BalanceOptions):
            self.balance = balance
        else:
            self.balance = check_balance({**preset.get("balance", {}), **(balance or {})})
        # A preset's warm-up goes with its step count: other step counts keep the same fraction.
        preset_t0 = preset.get("balance", {}).get("t0")
        by_preset = preset_t0 is not None and not isinstance(balance, BalanceOptions) and "t0" not in (balance or {})
        self._t0_fraction = preset_t0 / preset.get("num_steps", 50) if by_preset else None
        self.scheduler_name = scheduler if scheduler is not None else preset.get("scheduler")
        self.num_steps = num_steps if num_steps is not None else preset.get("num_steps", 50)
        self.guidance_scale = guidance_scale if guidance_scale is not None else preset.get("guidance_scale", 7.5)
        self.balance = self._balance_for(self.num_steps)
        check_warmup(self.balance, self.num_steps, "balanced")
        self.append_missing_phrases = append_missing_phrases
        l2i_list = l2i if isinstance(l2i, list) else [l2i]
        if not l2i_list:
            raise RealCompoError("RealCompo needs at least one L2I adapter")
        l2i_opts = l2i_options if isinstance(l2i_options, list) else [l2i_options] * len(l2i_list)
        _check_before_loading(t2i, t2i_options, l2i_list, l2i_opts, planner)

        self.t2i: T2IAdapter = _resolve("t2i", t2i, t2i_options, T2IAdapter)
        self.l2i: list[L2IAdapter] = [_resolve_l2i(v, o, self.t2i) for v, o in zip(l2i_list, l2i_opts)]
        self.planner = None if planner is None else _resolve("planner", planner, planner_options, LayoutPlanner)
        h, w = self.t2i.latent_spec.default_resolution
        check_compatible(self.t2i, self.l2i, h, w)

    def _balance_for(self, steps: int) -> BalanceOptions:
        """The balancer options of a run of `steps` steps (a preset's t0 scaled to them)."""
        if self._t0_fraction is None:
            return self.balance
        return self.balance.model_copy(update={"t0": round(self._t0_fraction * steps)})

    @property
    def adapters(self) -> list[Any]:
        """The T2I adapter, then the L2I adapters, in the order they are balanced."""
        return [self.t2i, *self.l2i]

    def plan(self, prompt: str) -> Layout:
        """The planner's layout of `prompt` (an error when this RealCompo has no planner)."""
        if self.planner is None:
            raise RealCompoError("no planner configured: pass layout=... or planner='rules'")
        return self.planner.plan(prompt)

    def __call__(
        self,
        prompt: str | None = None,
        *,
        layout: Layout | None = None,
        seed: int = 0,
        batch_size: int = 1,
        negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        mode: str = "balanced",
        record_influence: bool = False,
        progress: bool | Callable[[int, int], None] = False,
    ) -> GenerationResult:
        """Generate `batch_size` images; sample b uses seed `seed + b`.

        Give a `prompt` (the planner makes the layout) or a `layout` (its prompt is used).
        `mode` is "balanced" (RealCompo), "t2i" or "l2i" (one model alone, the baselines; "l2i"
        uses the first L2I adapter), with the same noise, scheduler and decoder; it is chosen per
        call, so one loaded `RealCompo` runs all three. `num_steps` / `guidance_scale` left None
        take the constructor's. `progress` is True for a progress bar, or a callback
        ``(step, total)``; `record_influence` keeps the influence maps of every step in the result.
        """
        started = time.perf_counter()
        settings = check_sampling(seed=seed, batch_size=batch_size, negative_prompt=negative_prompt, height=height,
                                  width=width, num_steps=num_steps, guidance_scale=guidance_scale, mode=mode)  # fmt: skip
        if layout is None:
            if prompt is None:
                raise RealCompoError("give a prompt, a layout, or both")
            layout = self.plan(prompt)
        prompt = prompt or layout.prompt
        run = self._run([prompt] * batch_size, [layout] * batch_size, [seed + b for b in range(batch_size)],
                        settings, mixed=False, record_influence=record_influence, progress=progress)
        record = self._record(run, 0, seeds=run.seeds, positions=run.positions[0], started=started)
        return GenerationResult(images=run.images, record=record, influence=run.influence, latents=run.latents)

    def generate_batch(
        self,
        items: Sequence[BatchItem],
        *,
        negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        guidance_scale: float | None = None,
        mode: str = "balanced",
        progress: bool | Callable[[int, int], None] = False,
    ) -> list[GenerationResult]:
        """One image per item, items with different prompts, layouts and seeds sharing each batched
        forward; one result (one image, its own record) per item, in order.

        When an adapter does not declare `mixed_batches`, items are run in groups that share
        prompt and layout instead (same images up to float rounding, fewer shared forwards).
        Image b equals ``rc(layout=..., seed=...)`` up to float32 rounding of the batched kernels.
        """
        started = time.perf_counter()
        if not items:
            return []
        settings = check_sampling(seed=min(i.seed for i in items), batch_size=len(items), negative_prompt=negative_prompt,
                                  height=height, width=width, num_steps=num_steps, guidance_scale=guidance_scale, mode=mode)
        for item in items:
            check_sampling(seed=item.seed)
        layouts = [item.layout if item.layout is not None else self.plan(item.prompt or "") for item in items]
        prompts = [item.prompt or layout.prompt for item, layout in zip(items, layouts)]
        seeds = [item.seed for item in items]
        if all(a.mixed_batches for a in self.adapters):
            groups = [list(range(len(items)))]
        else:  # adapters that read one layout per request: one run per distinct prompt and layout
            by_key: dict[tuple[str, str], list[int]] = {}
            for i, (p, lay) in enumerate(zip(prompts, layouts)):
                by_key.setdefault((p, lay.model_dump_json()), []).append(i)
            groups = list(by_key.values())
        results: list[GenerationResult | None] = [None] * len(items)
        for group in groups:
            run = self._run([prompts[i] for i in group], [layouts[i] for i in group], [seeds[i] for i in group],
                            settings, mixed=len(groups) == 1, record_influence=False, progress=progress)
            for b, i in enumerate(group):
                record = self._record(run, b, seeds=[seeds[i]], positions=run.positions[b], started=started)
                record.batch = {"index": b, "seeds": run.seeds}
                results[i] = GenerationResult(images=[run.images[b]], record=record, latents=run.latents[b : b + 1])
        return [r for r in results if r is not None]

    def _run(self, prompts: list[str], layouts: list[Layout], seeds: list[int], settings: SamplingSettings, *,
             mixed: bool, record_influence: bool, progress: bool | Callable[[int, int], None]) -> _Run:
        """Sample one batch: sample b has prompts[b], layouts[b], seeds[b]."""
        import torch

        from .sampler import BalancedProblem, balanced_sample, plain_sample

        mode = settings.mode
        steps = self.num_steps if settings.num_steps is None else settings.num_steps
        balance = self._balance_for(steps)
        check_warmup(balance, steps, mode)
        dh, dw = self.t2i.latent_spec.default_resolution
        height, width = settings.height or dh, settings.width or dw
        check_compatible(self.t2i, self.l2i, height, width)
        for layout in {id(lay): lay for lay in layouts}.values():  # each layout object once
            for adapter in self.l2i:
                adapter.check_layout(layout)

        # token positions in each adapter's own tokenization; a prompt may gain appended phrases
        prompts, aligned = list(prompts), []  # aligned[k][b]: adapter k, sample b
        for b, layout in enumerate(layouts):
            phrases = [o.phrase for o in layout.objects]
            if self.append_missing_phrases:  # extend the prompt once, then align every adapter on it
                for adapter in self.adapters:
                    prompts[b], _ = adapter.phrase_token_positions(prompts[b], phrases, append_missing=True)
        cache: dict[tuple[int, str, tuple[str, ...]], list[list[int]]] = {}
        for k, adapter in enumerate(self.adapters):
            per_sample = []
            for prompt, layout in zip(prompts, layouts):
                key = (k, prompt, tuple(o.phrase for o in layout.objects))
                if key not in cache:
                    cache[key] = adapter.phrase_token_positions(prompt, list(key[2]))[1]
                per_sample.append(cache[key])
            aligned.append(per_sample)
        names = [a.name if [b.name for b in self.adapters].count(a.name) == 1 else f"{a.name}#{i}"
                 for i, a in enumerate(self.adapters)]
        positions = [dict(zip(names, (aligned[k][b] for k in range(len(self.adapters))))) for b in range(len(prompts))]
        most = max(len(lay.objects) for lay in layouts)  # pad token groups: the loss ignores padding objects
        token_groups = [[groups + [[0]] * (most - len(groups)) for groups in per_adapter] for per_adapter in aligned]

        batch = len(prompts)
        guidance = self.guidance_scale if settings.guidance_scale is None else settings.guidance_scale
        request = GenerationRequest(
            prompt=prompts[0], negative_prompt=settings.negative_prompt, layout=layouts[0], batch_size=batch,
            height=height, width=width, num_steps=steps, seed=seeds[0],
            prompts=tuple(prompts) if mixed else (), layouts=tuple(layouts) if mixed else (),
            seeds=tuple(seeds) if seeds != [seeds[0] + b for b in range(batch)] else (), guidance_scale=guidance)
        device = self.t2i.device
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        scheduler = self.t2i.make_scheduler(self.scheduler_name)
        states = [a.prepare(request) for a in self.adapters]
        problem = BalancedProblem(adapters=self.adapters, states=states, token_groups=token_groups, request=request,
                                  scheduler=scheduler, generators=generators, guidance_scale=guidance, options=balance,
                                  timestep_kwargs=self.t2i.timestep_kwargs(height, width, steps))
        callback = _progress_callback(progress, steps)
        influence: list[Any] = []
        passes: dict[str, int] = {}
        if mode == "balanced":
            out = balanced_sample(problem, record_influence=record_influence, callback=callback)
            latents, influence, passes = out.latents, out.influence, out.passes
        else:
            k = 0 if mode == "t2i" else 1
            latents = plain_sample(self.adapters[k], states[k], problem, callback=callback)
        return _Run(images=_to_pil(self.t2i.decode(latents)), latents=latents, influence=influence, passes=passes,
                    prompts=prompts, layouts=layouts, seeds=seeds, positions=positions, mode=mode, height=height,
                    width=width, steps=steps, guidance=guidance, scheduler=type(scheduler).__name__, balance=balance,
                    negative_prompt=settings.negative_prompt, adapters=[a.describe() for a in self.adapters],
                    versions=environment_versions())

    def _record(self, run: _Run, b: int, *, seeds: list[int], positions: dict[str, list[list[int]]],
                started: float) -> GenerationRecord:
        return GenerationRecord(
            prompt=run.prompts[b], negative_prompt=run.negative_prompt, layout=run.layouts[b], mode=run.mode,
            seeds=seeds, height=run.height, width=run.width, num_steps=run.steps, guidance_scale=run.guidance,
            scheduler=run.scheduler, balance=run.balance.model_dump(mode="json"),
            adapters=run.adapters, planner=self.planner.describe() if self.planner is not None else None,
            token_positions=positions, passes=run.passes, versions=run.versions,
            seconds=round(time.perf_counter() - started, 3),
        )


@dataclass
class _Run:
    """One sampled batch and what its records need."""

    images: list[Any]
    latents: Any
    influence: list[Any]
    passes: dict[str, int]
    prompts: list[str]
    layouts: list[Layout]
    seeds: list[int]
    positions: list[dict[str, list[list[int]]]]  # per sample: adapter name -> object positions
    mode: str
    height: int
    width: int
    steps: int
    guidance: float
    scheduler: str
    balance: BalanceOptions
    negative_prompt: str
    adapters: list[dict[str, Any]]  # what each adapter says of itself, once per batch
    versions: dict[str, str]  # read once per batch: scanning installed distributions takes ~30 ms


@dataclass(frozen=True)
class BatchItem:
    """One image of `RealCompo.generate_batch`: a layout (or a prompt for the planner) and a seed."""

    seed: int
    layout: Layout | None = None
    prompt: str | None = None  # default: the layout's prompt


def _progress_callback(progress: bool | Callable[[int, int], None], total: int) -> Callable[[int], None] | None:
    if callable(progress):
        return lambda i: progress(i + 1, total)
    if not progress:
        return None
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="denoising", unit="step")

    def update(i: int) -> None:
        bar.update(1)
        if i + 1 == total:
            bar.close()

    return update


def _to_pil(images: Any) -> list[Any]:
    from PIL import Image

    arrays = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in arrays]


__all__ = ["BatchItem", "GenerationResult", "LayoutError", "RealCompo", "check_compatible"]
