"""The public layout model: objects with a phrase and a region (box, mask, keypoints, point or
scribble).

Coordinates are normalised to [0, 1] with the origin at the top-left corner, x to the right and
y downwards, so a layout does not depend on the output resolution. The models are frozen
pydantic models and export a JSON schema (`Layout.model_json_schema()`), which the LLM planners
use for structured output.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# OpenPose COCO-18 body keypoints, in the order OpenPose renders them.
COCO18_KEYPOINTS: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

RegionKind = Literal["box", "mask", "keypoints", "point", "scribble"]
REGION_KINDS: tuple[RegionKind, ...] = ("box", "mask", "keypoints", "point", "scribble")
Unit = Annotated[float, Field(ge=0.0, le=1.0)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Box(_Frozen):
    """An axis-aligned box (x0, y0) top-left to (x1, y1) bottom-right, normalised to [0, 1]."""

    x0: Unit
    y0: Unit
    x1: Unit
    y1: Unit

    @model_validator(mode="before")
    @classmethod
    def _not_pixels(cls, data: Any) -> Any:
        if isinstance(data, dict):
            values = [data.get(k) for k in ("x0", "y0", "x1", "y1")]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            # Values well past 1 are pixels: one clear hint instead of a range error per coordinate
            # (a value just past 1, e.g. 1.2, keeps the precise field error).
            if len(numbers) == 4 and min(numbers) >= 0 and max(numbers) > 2:
                raise ValueError(
                    f"box coordinates are fractions of the image in [0, 1], not pixels (got x0={values[0]}, "
                    f"y0={values[1]}, x1={values[2]}, y1={values[3]}): divide x by the image width and y by its height"
                )
        return data

    @model_validator(mode="after")
    def _not_empty(self) -> Box:
        if self.x1 <= self.x0 or self.y1 <= self.y0:
            raise ValueError(
                f"box is empty or inverted (x0={self.x0}, y0={self.y0}, x1={self.x1}, "
                f"y1={self.y1}): need x0 < x1 and y0 < y1"
            )
        return self

    @classmethod
    def from_xywh(cls, x: float, y: float, w: float, h: float) -> Box:
        """A box from its top-left corner, width and height (fractions of the image)."""
        return cls(x0=x, y0=y, x1=x + w, y1=y + h)

    @property
    def area(self) -> float:
        """Width times height, as a fraction of the image."""
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    def as_tuple(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1)."""
        return (self.x0, self.y0, self.x1, self.y1)


class RLE(_Frozen):
    """COCO-style uncompressed run-length encoding, column-major, starting with a 0-run."""

    size: tuple[int, int] = Field(description="(height, width) of the mask")
    counts: list[int]

    @model_validator(mode="after")
    def _counts_cover_mask(self) -> RLE:
        h, w = self.size
        if h <= 0 or w <= 0:
            raise ValueError(f"RLE size must be positive, got {self.size}")
        if any(c < 0 for c in self.counts):
            raise ValueError("RLE counts must be non-negative")
        if sum(self.counts) != h * w:
            raise ValueError(
                f"RLE counts sum to {sum(self.counts)} but size {h}x{w} needs {h * w}"
            )
        return self


class Mask(_Frozen):
    """A binary mask over the whole image, given as rows of 0/1 or as an RLE."""

    rows: list[list[int]] | None = Field(default=None, description="rows of 0/1, top to bottom")
    rle: RLE | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Mask:
        if (self.rows is None) == (self.rle is None):
            raise ValueError("a mask needs exactly one of 'rows' or 'rle'")
        if self.rows is not None:
            if not self.rows or not self.rows[0]:
                raise ValueError("mask rows are empty")
            width = len(self.rows[0])
            for i, row in enumerate(self.rows):
                if len(row) != width:
                    raise ValueError(
                        f"mask has the wrong shape: row {i} has {len(row)} values, row 0 has "
                        f"{width}; every row must have the same length"
                    )
                if any(v not in (0, 1) for v in row):
                    raise ValueError(f"mask row {i} holds values other than 0 and 1")
        if not any(self._flat()):
            raise ValueError("mask is empty (no pixel set)")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the mask grid."""
        if self.rows is not None:
            return (len(self.rows), len(self.rows[0]))
        assert self.rle is not None
        return self.rle.size

    def _flat(self) -> list[int]:
        """Row-major flat list of 0/1."""
        if self.rows is not None:
            return [v for row in self.rows for v in row]
        assert self.rle is not None
        h, w = self.rle.size
        column_major: list[int] = []
        value = 0
        for count in self.rle.counts:
            column_major.extend([value] * count)
            value = 1 - value
        return [column_major[x * h + y] for y in range(h) for x in range(w)]

    def to_rows(self) -> list[list[int]]:
        """The mask as rows of 0/1 (decoded from RLE when given so)."""
        h, w = self.shape
        flat = self._flat()
        return [flat[y * w : (y + 1) * w] for y in range(h)]

    @classmethod
    def from_array(cls, array: object) -> Mask:
        """From anything `numpy.asarray` accepts (bool or 0/1, shape (H, W))."""
        import numpy as np

        a = np.asarray(array)
        if a.ndim != 2:
            raise ValueError(f"mask array must be 2-D (H, W), got shape {a.shape}")
        return cls(rows=(a > 0).astype(int).tolist())

    def bounding_box(self) -> Box:
        h, w = self.shape
        rows = self.to_rows()
        ys = [y for y in range(h) if any(rows[y])]
        xs = [x for x in range(w) if any(rows[y][x] for y in range(h))]
        return Box(x0=min(xs) / w, y0=min(ys) / h, x1=(max(xs) + 1) / w, y1=(max(ys) + 1) / h)


class Keypoint(_Frozen):
    """A named point (OpenPose COCO-18 names) with visibility."""

    name: str
    x: Unit
    y: Unit
    visible: bool = True

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        if name not in COCO18_KEYPOINTS:
            raise ValueError(
                f"unknown keypoint name {name!r}; known names: {', '.join(COCO18_KEYPOINTS)}"
            )
        return name


class Point(_Frozen):
    """An unnamed point, normalised to [0, 1]: an instance's location, or one point of a scribble."""

    x: Unit
    y: Unit


class LayoutObject(_Frozen):
    """One object of the layout: a phrase of the prompt and exactly one region."""

    phrase: str = Field(description="the words of the prompt that name this object")
    box: Box | None = None
    mask: Mask | None = None
    keypoints: list[Keypoint] | None = None
    point: Point | None = Field(default=None, description="one point inside the object")
    scribble: list[Point] | None = Field(
        default=None, min_length=2, description="a free-hand stroke over the object, as points in drawing order"
    )

    @field_validator("phrase")
    @classmethod
    def _phrase_not_empty(cls, phrase: str) -> str:
        phrase = " ".join(phrase.split())
        if not phrase:
            raise ValueError("phrase is empty; give the words of the prompt naming the object")
        return phrase

    @model_validator(mode="after")
    def _one_region(self) -> LayoutObject:
        given = [k for k in REGION_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"object {self.phrase!r} needs exactly one region ({', '.join(REGION_KINDS)}), "
                f"got {given or 'none'}"
            )
        if self.keypoints is not None:
            names = [k.name for k in self.keypoints]
            if len(set(names)) != len(names):
                raise ValueError(f"object {self.phrase!r} repeats a keypoint name")
            if not any(k.visible for k in self.keypoints):
                raise ValueError(f"object {self.phrase!r} has no visible keypoint")
        return self

    @property
    def kind(self) -> RegionKind:
        """Which region the object has: box, mask, keypoints, point or scribble."""
        return next(k for k in REGION_KINDS if getattr(self, k) is not None)

    def bounding_box(self, keypoint_padding: float = 0.05) -> Box:
        """The box around the region (keypoints, point, scribble: the points' extent, padded by
        `keypoint_padding`, clipped to [0, 1])."""
        if self.box is not None:
            return self.box
        if self.mask is not None:
            return self.mask.bounding_box()
        points: list[Keypoint] | list[Point]
        if self.keypoints is not None:
            points = [k for k in self.keypoints if k.visible]
        elif self.point is not None:
            points = [self.point]
        else:
            assert self.scribble is not None
            points = self.scribble
        xs = [k.x for k in points]
        ys = [k.y for k in points]
        pad = max(keypoint_padding, 1e-3)  # a single point (or a line) still needs a non-empty box
        x0, x1 = max(0.0, min(xs) - pad), min(1.0, max(xs) + pad)
        y0, y1 = max(0.0, min(ys) - pad), min(1.0, max(ys) + pad)
        return Box(x0=x0, y0=y0, x1=x1, y1=y1)


class Layout(_Frozen):
    """A planned scene: the prompt, its objects and an optional background prompt."""

    prompt: str = Field(description="the full text prompt the image is generated from")
    objects: list[LayoutObject] = Field(min_length=1)
    background: str | None = Field(default=None, description="e.g. 'a grey background'")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_empty(cls, prompt: str) -> str:
        if not prompt.strip():
            raise ValueError("prompt is empty")
        return prompt.strip()

    @property
    def kinds(self) -> set[RegionKind]:
        """The region kinds the layout uses."""
        return {o.kind for o in self.objects}

    @classmethod
    def from_boxes(
        cls, prompt: str, boxes: dict[str, tuple[float, float, float, float]] | list, **kw: object
    ) -> Layout:
        """Shorthand: `Layout.from_boxes(prompt, [("a cat", (x0, y0, x1, y1)), ...])`."""
        items = boxes.items() if isinstance(boxes, dict) else boxes
        objects = [LayoutObject(phrase=p, box=Box(x0=b[0], y0=b[1], x1=b[2], y1=b[3])) for p, b in items]
        return cls(prompt=prompt, objects=objects, **kw)  # type: ignore[arg-type]

    def describe_error_location(self, index: int) -> str:
        """How an error message names object `index`: its position and phrase."""
        return f"object {index} ({self.objects[index].phrase!r})"


def load_layout(data: str | bytes | dict) -> Layout:
    """Parse a layout from JSON text or a dict, with errors that name object and field."""
    from pydantic import ValidationError

    from .errors import LayoutError

    try:
        if isinstance(data, dict):
            return Layout.model_validate(data)
        return Layout.model_validate_json(data)
    except ValidationError as exc:
        raise LayoutError(format_validation_error(exc, data)) from exc


def format_validation_error(exc: object, data: object = None, what: str = "layout", show_input: bool = False) -> str:
    """Turn a pydantic ValidationError into lines like `objects[1] ('a dog').box: ...`
    (`show_input`: each line ends with the value given, for flat settings such as `--steps 0`)."""
    lines = [f"invalid {what}:"]
    if isinstance(data, (str, bytes)):
        import json

        try:  # JSON input: parse it too, so locations can name the object's phrase
            data = json.loads(data)
        except ValueError:
            data = None
    objects = data.get("objects") if isinstance(data, dict) else None
    for err in exc.errors():  # type: ignore[attr-defined]
        loc = list(err["loc"])
        where = ""
        for i, part in enumerate(loc):
            if isinstance(part, int):
                where += f"[{part}]"
                if i > 0 and loc[i - 1] == "objects" and isinstance(objects, list):
                    if part < len(objects) and isinstance(objects[part], dict):
                        where += f" ({objects[part].get('phrase')!r})"
            else:
                where += ("." if where else "") + str(part)
        message = err["msg"].removeprefix("Value error, ")
        given = f" (got {err.get('input')!r})" if show_input else ""
        lines.append(f"  {where or '<root>'}: {message}{given}")
    return "\n".join(lines)
