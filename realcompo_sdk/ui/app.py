"""`realcompo ui`: a Gradio app to plan a layout, edit its boxes, generate, and watch the balance.

Flow: prompt → planner → editable boxes (gradio_image_annotation: drag to move, handles to resize,
double-click to rename, Delete to remove, "Create box" to add) → generate with any installed T2I
and L2I adapters → the image, its layout overlay, the influence of each model per step, and on
request the T2I and L2I alone with the same seed. Errors are the SDK's own messages.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..balancer import BalanceOptions
from ..errors import RealCompoError
from ..layout import Layout, load_layout
from .boxes import from_annotation, to_annotation
from .forms import changed_options, form_fields, shown_value
from .influence import influence_frames, legend_markdown

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no telemetry calls from a local tool


class Session:
    """The loaded models, kept between clicks (loading takes longer than sampling)."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.rc: Any = None

    def models(self, t2i: str, l2i: str, t2i_form: dict[str, Any], l2i_form: dict[str, Any]) -> Any:
        """The RealCompo for these adapters and the options changed in their forms."""
        return self.get(t2i, l2i, changed_options("t2i", t2i, t2i_form), changed_options("l2i", l2i, l2i_form))

    def get(self, t2i: str, l2i: str, t2i_options: dict[str, Any], l2i_options: dict[str, Any]) -> Any:
        from ..compose import RealCompo

        key = json.dumps([t2i, l2i, t2i_options, l2i_options], sort_keys=True)
        if key != self.key:
            self.rc, self.key = None, None  # free the old models first
            self.rc = RealCompo(t2i=t2i, l2i=l2i, planner=None, t2i_options=t2i_options, l2i_options=l2i_options)
            self.key = key
        return self.rc


def edited_layout(boxes: Any, prompt: str, previous: dict | None) -> Layout:
    """The layout in the editor; `previous` (the planned or uploaded one) keeps untouched regions."""
    return from_annotation(boxes, prompt, Layout.model_validate(previous) if previous else None)


def _options_form(gr: Any, kind: str, dropdown: Any, values: Any) -> None:
    """One field per option of the chosen adapter, rebuilt when the dropdown changes; each edit
    is kept in `values` (a gr.State), from which `changed_options` builds the options."""

    @gr.render(inputs=dropdown)
    def form(adapter_id: str | None) -> None:
        try:
            specs = form_fields(kind, adapter_id)
        except RealCompoError as exc:
            gr.Markdown(f"*{exc}*")
            return
        gr.Markdown(f"**{kind.upper()} `{adapter_id}`** (presets fill their own values)")
        for spec in specs:
            common = {"label": spec.name, "info": spec.description or None, "value": shown_value(spec),
                      "elem_id": f"{kind}-option-{spec.name}", "interactive": True}
            if spec.widget == "checkbox":
                widget = gr.Checkbox(**common)
            elif spec.widget in ("int", "float"):
                integer = spec.widget == "int"
                widget = gr.Number(precision=0 if integer else None, step=1 if integer else 0.01, **common)
            elif spec.widget == "choice":
                widget = gr.Dropdown(list(spec.choices), **common)
            else:
                widget = gr.Textbox(lines=1, max_lines=6 if spec.widget == "json" else 1, **common)
            widget.change(lambda value, kept, name=spec.name: {**kept, name: value}, [widget, values], values)


def build_app(session: Session | None = None) -> Any:
    import gradio as gr
    from gradio_image_annotation import image_annotator

    from .. import registry

    session = session or Session()
    report = registry.report()
    ids = {kind: sorted(i for (k, i) in report.registrations if k == kind) for kind in ("t2i", "l2i", "planner")}

    def errors(fn: Any) -> Any:
        """The SDK's messages as Gradio errors: one line in the page, never a traceback."""
        @functools.wraps(fn)  # Gradio reads the signature (inputs, the progress parameter)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except (RealCompoError, ValueError) as exc:
                raise gr.Error(str(exc), print_exception=False) from None
        return wrapped

    @errors
    def plan(prompt: str, planner: str) -> tuple[Any, Any]:
        if not prompt.strip():
            raise RealCompoError("type a prompt first, e.g. 'a red circle to the left of a blue square'")
        layout = registry.create("planner", planner).plan(prompt)
        return to_annotation(layout), layout.model_dump(mode="json")

    @errors
    def upload_layout(path: str | None, prompt: str) -> tuple[Any, Any, str]:
        if not path:
            raise RealCompoError("no file")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RealCompoError(f"{Path(path).name}: not a UTF-8 JSON file") from None
        layout = load_layout(text)
        return to_annotation(layout), layout.model_dump(mode="json"), layout.prompt

    @errors
    def export_layout(boxes: Any, prompt: str, previous: dict | None) -> str:
        layout = edited_layout(boxes, prompt, previous)
        path = Path(tempfile.mkdtemp(prefix="realcompo-ui-")) / "layout.json"
        path.write_text(layout.model_dump_json(indent=2), encoding="utf-8")
        return str(path)

    @errors
    def generate(boxes: Any, prompt: str, previous: dict | None, t2i: str, l2i: str, t2i_opts: dict, l2i_opts: dict,
                 seed: float, steps: float, guidance: float,
                 progress: Any = gr.Progress()) -> tuple[Any, ...]:  # noqa: B008 - Gradio's way to ask for a bar
        from ..images import layout_overlay, png_bytes

        layout = edited_layout(boxes, prompt, previous)
        rc = session.models(t2i, l2i, t2i_opts, l2i_opts)
        bar = progress.tqdm(range(int(steps)), desc="denoising", unit="step")
        ticks = iter(bar)

        def step(done: int, total: int) -> None:
            next(ticks, None)

        result = rc(layout=layout, seed=int(seed), num_steps=int(steps), guidance_scale=float(guidance),
                    record_influence=True, progress=step)
        names = [a["id"] for a in result.record.adapters]
        png = Path(tempfile.mkdtemp(prefix="realcompo-ui-")) / f"realcompo-seed{int(seed)}.png"
        png.write_bytes(png_bytes(result.images[0], result.record.model_dump_json(exclude_none=True)))
        warmup = BalanceOptions.model_validate(result.record.balance).warmup_steps(len(result.influence))
        frames = influence_frames(result.influence, names, warmup=warmup)
        shown = _enlarged(result.images[0])
        return (shown, layout_overlay(layout, result.images[0]), frames, legend_markdown(names), str(png),
                layout.model_dump(mode="json"))

    @errors
    def compare(boxes: Any, prompt: str, previous: dict | None, t2i: str, l2i: str, t2i_opts: dict, l2i_opts: dict,
                seed: float, steps: float, guidance: float) -> list[tuple[Any, str]]:
        layout = edited_layout(boxes, prompt, previous)
        rc = session.models(t2i, l2i, t2i_opts, l2i_opts)
        kwargs = {"layout": layout, "seed": int(seed), "num_steps": int(steps), "guidance_scale": float(guidance)}
        return [(_enlarged(rc(**kwargs, mode=mode).images[0]), caption) for mode, caption in
                (("balanced", "RealCompo (balanced)"), ("t2i", f"{t2i} alone"), ("l2i", f"{l2i} alone"))]

    with gr.Blocks(title="RealCompo") as app:
        gr.Markdown("# RealCompo\nPlan a layout, edit its boxes, generate, and watch which model rules where.")
        layout_state = gr.State(None)  # the last planned/uploaded layout: keeps masks and points
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", value="a red circle to the left of a blue square", elem_id="prompt")
                with gr.Row():
                    planner = gr.Dropdown(ids["planner"], value="rules" if "rules" in ids["planner"] else None,
                                          label="Planner", elem_id="planner")
                    plan_button = gr.Button("Plan layout", elem_id="plan", variant="secondary")
                boxes = image_annotator(value=None, label="Layout (drag to move, handles to resize, double-click to "
                                        "rename, Delete to remove)", image_type="pil", sources=None,
                                        show_download_button=False, elem_id="layout", box_min_size=8)
                with gr.Row():
                    upload = gr.File(label="Upload a layout JSON", file_types=[".json"], elem_id="layout_upload")
                    with gr.Column():
                        export_button = gr.Button("Download layout JSON", elem_id="export_layout")
                        layout_file = gr.File(label="layout.json", elem_id="layout_file", interactive=False)
            with gr.Column(scale=2):
                with gr.Row():
                    t2i = gr.Dropdown(ids["t2i"], value="shapes-sd" if "shapes-sd" in ids["t2i"] else None,
                                      label="T2I adapter", elem_id="t2i")
                    l2i = gr.Dropdown(ids["l2i"], value="shapes-controlnet" if "shapes-controlnet" in ids["l2i"] else None,
                                      label="L2I adapter", elem_id="l2i")
                t2i_options = gr.State({})  # the form values the user changed, by field name
                l2i_options = gr.State({})
                with gr.Accordion("Adapter options", open=False, elem_id="adapter_options"):
                    for kind, dropdown, values in (("t2i", t2i, t2i_options), ("l2i", l2i, l2i_options)):
                        _options_form(gr, kind, dropdown, values)
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, elem_id="seed")
                    steps = gr.Number(25, label="Steps", precision=0, minimum=1, maximum=1000, elem_id="steps")
                    guidance = gr.Number(5.0, label="Guidance", minimum=0, maximum=100, elem_id="guidance")
                with gr.Row():
                    generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    compare_button = gr.Button("T2I alone / L2I alone, same seed", elem_id="compare")
                with gr.Row():
                    image = gr.Image(label="Image", type="pil", elem_id="image", interactive=False)
                    overlay = gr.Image(label="Layout over the image", type="pil", elem_id="overlay", interactive=False)
                image_file = gr.File(label="PNG with its generation record", elem_id="image_file", interactive=False)
        legend = gr.Markdown(elem_id="legend")
        influence = gr.Gallery(label="Influence per step", columns=10, height="auto", elem_id="influence",
                               allow_preview=True)
        comparison = gr.Gallery(label="Same seed: balanced, T2I alone, L2I alone", columns=3, elem_id="comparison")

        inputs = [boxes, prompt, layout_state, t2i, l2i, t2i_options, l2i_options, seed, steps, guidance]
        plan_button.click(plan, [prompt, planner], [boxes, layout_state])
        upload.upload(upload_layout, [upload, prompt], [boxes, layout_state, prompt])
        export_button.click(export_layout, [boxes, prompt, layout_state], layout_file)
        generate_button.click(generate, inputs, [image, overlay, influence, legend, image_file, layout_state])
        compare_button.click(compare, inputs, comparison)
        t2i.change(lambda _: {}, t2i, t2i_options)  # another adapter: its own defaults
        l2i.change(lambda _: {}, l2i, l2i_options)
    return app


def _enlarged(image: Any, size: int = 256) -> Any:
    """Small images (the Shapes models make 64×64) shown at `size` pixels, without blurring."""
    from PIL import Image

    if max(image.size) >= size:
        return image
    factor = size // max(image.size)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def serve(host: str = "127.0.0.1", port: int | None = None, share: bool = False) -> Any:
    """Start the app in a background thread and return it (`app.local_url`, `app.block_thread()`,
    `app.close()`)."""
    app = build_app()
    app.queue(default_concurrency_limit=1)  # one generation at a time: the models are shared
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, quiet=True,
               ssr_mode=False, show_error=True, inbrowser=False)
    return app
