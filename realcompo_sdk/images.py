"""Pictures people look at: PNGs with the generation record embedded, layout overlays, and grids
of influence maps over the steps. Files are written atomically (temp file + rename)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from .layout import Layout

PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


STALE_PART_SECONDS = 3600.0


def check_output(path: str | Path, flag: str) -> bool:
    """Refuse an output PNG path that cannot be written, before any work; True if it exists (it
    will be replaced: the CLI says so when it writes)."""
    from .errors import RealCompoError

    path = Path(path)
    if path.is_dir():
        raise RealCompoError(f"{flag} {path}: is a folder; give a file name such as {path / 'out.png'}")
    if path.suffix.lower() != ".png":
        raise RealCompoError(f"{flag} {path}: the file is a PNG (with the generation record inside); give it a .png name")
    folder = path.parent
    while not folder.exists():  # the first existing ancestor decides whether the folders can be made
        folder = folder.parent
    if not folder.is_dir():
        raise RealCompoError(f"{flag} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):  # the file is replaced by a rename: the folder is what matters
        raise RealCompoError(f"{flag} {path}: no permission to write in {folder}")
    return path.exists()


def _remove_stale_parts(path: Path) -> None:
    """Temp files a killed writer left next to `path` (an hour old: no live writer still owns them)."""
    import time

    for part in path.parent.glob(f".{path.name}.*.part"):
        try:
            if time.time() - part.stat().st_mtime > STALE_PART_SECONDS:
                part.unlink()
        except OSError:  # gone meanwhile, or not ours to remove
            pass


def write_atomic(path: str | Path, save: Any) -> Path:
    """Call `save(file_object)` on a temp file next to `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            save(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_png(image: Any, path: str | Path, record_json: str | None = None) -> Path:
    """Save a PIL image as PNG with the record in a `realcompo` text chunk."""
    data = png_bytes(image, record_json)
    return write_atomic(path, lambda f: f.write(data))


def png_bytes(image: Any, record_json: str | None = None) -> bytes:
    """A PIL image as PNG bytes, with the record in a `realcompo` text chunk."""
    import io

    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if record_json is not None:
        info.add_text("realcompo", record_json)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_record(path: str | Path) -> str | None:
    from PIL import Image

    with Image.open(path) as im:
        return im.info.get("realcompo")


def layout_overlay(layout: Layout, image: Any = None, size: int = 512) -> Any:
    """Each object's box (for other regions, their bounding box; also the points or the scribble),
    labelled with its phrase, over `image`."""
    from PIL import Image, ImageDraw

    if image is None:
        canvas = Image.new("RGB", (size, size), (245, 245, 245))
    else:
        scale = max(1, size // max(image.size))
        canvas = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    w, h = canvas.size
    draw = ImageDraw.Draw(canvas)
    for i, obj in enumerate(layout.objects):
        color = PALETTE[i % len(PALETTE)]
        box = obj.bounding_box()
        xy = (box.x0 * w, box.y0 * h, box.x1 * w - 1, box.y1 * h - 1)
        draw.rectangle(xy, outline=color, width=max(2, w // 170))
        r = max(2, w // 120)
        dots = [k for k in obj.keypoints if k.visible] if obj.keypoints else [obj.point] if obj.point else []
        for k in dots:
            draw.ellipse((k.x * w - r, k.y * h - r, k.x * w + r, k.y * h + r), fill=color)
        if obj.scribble:
            draw.line([(p.x * w, p.y * h) for p in obj.scribble], fill=color, width=r)
        label = f"{i}: {obj.phrase}"
        tx, ty = xy[0] + 3, xy[1] + 2
        text_box = draw.textbbox((tx, ty), label)
        draw.rectangle(text_box, fill=color)
        draw.text((tx, ty), label, fill=(255, 255, 255))
    return canvas


def influence_grid(influence: list[Any], names: list[str], sample: int = 0, columns: int = 10, cell: int = 64) -> Any:
    """Rows: adapters; columns: evenly spaced steps. Each cell is that adapter's weight map
    (0 black → 1 white) for one sample, labelled with the step."""
    from PIL import Image, ImageDraw

    steps = len(influence)
    if steps == 0:
        raise ValueError("no influence maps were recorded (pass record_influence=True)")
    chosen = sorted({round(i * (steps - 1) / max(columns - 1, 1)) for i in range(min(columns, steps))})
    # The label column fits the longest adapter id (ids like "shapes-controlnet" must stay readable).
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(110, 12 + max((round(measure.textlength(n)) for n in names), default=0))
    header = 16
    grid = Image.new("RGB", (label_w + cell * len(chosen), header + cell * len(names)), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for c, step in enumerate(chosen):
        draw.text((label_w + c * cell + 4, 2), f"step {step}", fill=(0, 0, 0))
        weights = influence[step][:, sample, 0]  # (K, h, w)
        for r in range(len(names)):
            m = (weights[r].clamp(0, 1).numpy() * 255).astype("uint8")
            tile = Image.fromarray(m, mode="L").resize((cell, cell), Image.NEAREST).convert("RGB")
            grid.paste(tile, (label_w + c * cell, header + r * cell))
    for r, name in enumerate(names):
        draw.text((4, header + r * cell + cell // 2 - 6), name, fill=(0, 0, 0))
    return grid
