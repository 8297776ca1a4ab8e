"""The balance as pictures: one frame per step, each pixel coloured by which model rules it.

Each adapter gets a colour; a pixel's colour is the influence-weighted mix of them, so a pure
colour means one model alone and a blend means a shared pixel. The legend names the colours.
"""

from __future__ import annotations

from typing import Any

# Distinct, colour-blind-safe-ish hues (Okabe-Ito): T2I first, then the L2I adapters.
COLOURS = [(230, 159, 0), (0, 114, 178), (0, 158, 115), (204, 121, 167), (86, 180, 233), (213, 94, 0)]


def adapter_colours(count: int) -> list[tuple[int, int, int]]:
    return [COLOURS[k % len(COLOURS)] for k in range(count)]


def influence_frames(influence: list[Any], names: list[str], sample: int = 0, size: int = 256,
                     warmup: int = 0) -> list[tuple[Any, str]]:
    """(picture, caption) per step: the weights of `sample` as a colour mix, `size` pixels wide.

    During the first `warmup` steps the sampler follows the L2I models alone (their mean),
    whatever the influence maps say; those frames show that, not the unused maps."""
    import numpy as np
    from PIL import Image

    if not influence:
        raise ValueError("no influence maps were recorded (pass record_influence=True)")
    palette = np.array(adapter_colours(len(names)), dtype=np.float32)  # (K, 3)
    frames = []
    for step, weights in enumerate(influence):
        w = weights[:, sample, 0].float().clamp(0, 1).numpy()  # (K, h, w), sums to one over K
        if step < warmup:
            w = np.concatenate([np.zeros_like(w[:1]), np.full_like(w[1:], 1.0 / (len(names) - 1))])
        rgb = np.einsum("khw,kc->hwc", w, palette).round().clip(0, 255).astype("uint8")
        h, wid = rgb.shape[:2]
        picture = Image.fromarray(rgb).resize((size, max(1, size * h // wid)), Image.NEAREST)
        shares = ", ".join(f"{name} {100 * float(w[k].mean()):.0f}%" for k, name in enumerate(names))
        phase = "warm-up, L2I alone: " if step < warmup else ""
        frames.append((picture, f"step {step + 1}/{len(influence)}: {phase}{shares}"))
    return frames


def legend_markdown(names: list[str]) -> str:
    """Which colour is which model, as Markdown with coloured squares."""
    items = [f'<span style="color: rgb{c}">■</span> **{name}**' for name, c in zip(names, adapter_colours(len(names)))]
    return "Influence colours: " + " · ".join(items) + " (a blend: the pixel is shared)."
