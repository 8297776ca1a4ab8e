"""Pictures of what the balancer reads in an MMDiT: per joint block, each object's text attention,
and the influence maps of a balanced run — on the tiny random SD3 and Flux test models.

Random weights carry no semantics, so the maps show the mechanics only (positional structure, how
the mass spreads, how the influence moves); they say nothing about which blocks ground objects in
the real models. Writes one PNG:

    python benchmarks/mmdit_attention_pictures.py --out docs/images/mmdit-attention-tiny-random.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from realcompo_sdk.interfaces import GenerationRequest, StepInfo
from realcompo_sdk.joint_attention import JointAttentionCapture
from realcompo_sdk.layout import Layout

LAYOUT = Layout.from_boxes("a red cat to the left of a blue dog", [("red cat", (0.05, 0.2, 0.5, 0.8)), ("blue dog", (0.5, 0.2, 0.95, 0.8))])
CELL, SIZE = 96, 64  # picture cell in pixels; image side of the tiny models' run


def heat(maps: torch.Tensor) -> Image.Image:
    """A (h, w) map, normalised to its own range, as a white-to-red picture."""
    m = maps.detach().float().numpy()
    m = (m - m.min()) / max(float(m.max() - m.min()), 1e-12)
    rgb = np.stack([np.full_like(m, 1.0), 1 - m, 1 - m], axis=-1)
    return Image.fromarray((rgb * 255).astype(np.uint8)).resize((CELL, CELL), Image.NEAREST)


def block_maps(adapter: Any, state: Any, positions: list[list[int]]) -> list[torch.Tensor]:
    """Each joint block's (J, h, w) text attention at the first step, from the same latents."""
    latents = torch.randn(1, 16, SIZE // 2, SIZE // 2, generator=torch.Generator().manual_seed(0))
    step = StepInfo(index=0, num_steps=8, timestep=torch.tensor(900.0))  # early: layout is decided at high noise
    grid = SIZE // adapter.latent_spec.vae_scale_factor // adapter.patch_size
    out = []
    for i, block in enumerate(adapter.joint_blocks()):
        capture = JointAttentionCapture({f"transformer_blocks.{i}.attn": block.attn}, [positions], type(adapter).queries_keys)
        with capture, torch.no_grad():
            adapter.run_model(latents, step, state, ("cond",), 3.5)
        out.append(capture.maps()[0].reshape(-1, grid, grid))
    return out


def panel(title: str, rows: list[tuple[str, list[Image.Image], list[str]]]) -> Image.Image:
    """Rows of labelled cells, each cell captioned, with gaps between them."""
    gap, left = 6, 160
    width = max(left + (CELL + gap) * max(len(cells) for _, cells, _ in rows), 8 + 6 * len(title))
    row_h = CELL + 18
    canvas = Image.new("RGB", (width, 24 + len(rows) * row_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill="black")
    for r, (label, cells, captions) in enumerate(rows):
        y = 24 + r * row_h
        draw.text((4, y + CELL // 2), label, fill="black")
        for c, (cell, caption) in enumerate(zip(cells, captions)):
            draw.text((left + c * (CELL + gap), y), caption, fill="black")
            canvas.paste(cell, (left + c * (CELL + gap), y + 14))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("mmdit-attention-tiny-random.png"))
    args = parser.parse_args()
    from realcompo_plugin_mmdit.controlnet import FluxControlNetSegAdapter, SD3ControlNetSegAdapter
    from realcompo_plugin_mmdit.flux import FluxAdapter
    from realcompo_plugin_mmdit.sd3 import SD3Adapter

    from realcompo_sdk import RealCompo
    from realcompo_sdk.testing import folders_mmdit as tiny

    root = Path(tempfile.mkdtemp())
    panels = []
    for family, t2i_cls, cn_cls, save, save_cn in [
        ("sd3", SD3Adapter, SD3ControlNetSegAdapter, tiny.save_tiny_sd3_folder, tiny.save_tiny_sd3_controlnet_folder),
        ("flux", FluxAdapter, FluxControlNetSegAdapter, tiny.save_tiny_flux_folder, tiny.save_tiny_flux_controlnet_folder),
    ]:
        extra = {"default_size": SIZE} if family == "flux" else {}
        t2i = t2i_cls(model=str(save(root / family)), max_sequence_length=24, **extra)
        l2i = cn_cls.sharing(t2i, controlnet=str(save_cn(root / f"{family}-cn")))
        request = GenerationRequest(prompt=LAYOUT.prompt, negative_prompt="", layout=LAYOUT, batch_size=1, height=SIZE,
                                    width=SIZE, num_steps=8, guidance_scale=3.5)
        _, positions = t2i.phrase_token_positions(LAYOUT.prompt, ["red cat", "blue dog"])
        maps = block_maps(t2i, t2i.prepare(request), positions)
        rows = [(f"joint block {i}" + (" (read)" if i in t2i.attention_blocks else ""), [heat(m[0]), heat(m[1])],
                 ["red cat", "blue dog"]) for i, m in enumerate(maps)]
        rc = RealCompo(t2i=t2i, l2i=l2i, planner=None, num_steps=8, guidance_scale=3.5, balance={"t0": 2})
        result = rc(layout=LAYOUT, seed=0, height=SIZE, width=SIZE, record_influence=True)
        rows.append(("T2I's influence", [heat(w[0, 0, 0]) for w in result.influence[2::2]],
                     [f"step {i}" for i in range(2, len(result.influence), 2)]))
        panels.append(panel(f"{family}, tiny random weights: text attention (first step); T2I influence (red = T2I)", rows))
    width = max(p.width for p in panels)
    sheet = Image.new("RGB", (width, sum(p.height for p in panels)), "white")
    y = 0
    for p in panels:
        sheet.paste(p, (0, y))
        y += p.height
    args.out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
