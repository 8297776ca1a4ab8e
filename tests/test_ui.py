"""`realcompo ui` in a real browser: Playwright drives the system Chromium against the app on the
bundled Shapes models. Plan, drag a box, download the layout (it reflects the drag), generate
(image, one influence frame per step), compare with each model alone, and an invalid upload
shows the SDK's error. On failure the test saves a screenshot and says where."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

from realcompo_sdk.layout import Layout
from realcompo_sdk.ui.boxes import CANVAS, from_annotation, to_annotation

PROMPT = "a red circle to the left of a blue square"
STEPS = 6


# ---- the layout <-> boxes conversion (no browser) ------------------------------------------------
def test_boxes_round_trip_and_untouched_masks_keep_their_region():
    from realcompo_sdk.layout import LayoutObject, Mask

    layout = Layout(prompt="a cat and a tree", objects=[
        LayoutObject(phrase="cat", box={"x0": 0.1, "y0": 0.2, "x1": 0.4, "y1": 0.6}),
        LayoutObject(phrase="tree", mask=Mask(rows=[[0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]]))])
    value = to_annotation(layout)
    assert value["image"].size == (CANVAS, CANVAS)
    assert value["boxes"][0] == {"xmin": 51, "ymin": 102, "xmax": 205, "ymax": 307, "label": "cat",
                                 "color": value["boxes"][0]["color"]}
    back = from_annotation(value, layout.prompt, previous=layout)
    assert back.objects[1].mask == layout.objects[1].mask  # untouched: still a mask
    assert abs(back.objects[0].box.x0 - 0.1) < 1 / CANVAS
    value["boxes"][1]["xmin"] -= 40  # moved: now a box
    assert from_annotation(value, layout.prompt, previous=layout).objects[1].kind == "box"


@pytest.mark.parametrize(("boxes", "message"), [
    ([], "no boxes"),
    ([{"xmin": 10, "ymin": 10, "xmax": 50, "ymax": 50, "label": " "}], "box 0 has no phrase"),
    ([{"xmin": 50, "ymin": 10, "xmax": 50, "ymax": 50, "label": "cat"}], "box 0 \\('cat'\\)"),
])
def test_bad_boxes_are_named(boxes, message):
    from realcompo_sdk.errors import LayoutError

    with pytest.raises(LayoutError, match=message):
        from_annotation({"image": None, "boxes": boxes}, "a cat")


def test_option_forms_follow_the_options_model_and_pass_only_changes():
    from realcompo_sdk.errors import RealCompoError
    from realcompo_sdk.ui.forms import UNSET, changed_options, form_fields, shown_value

    specs = {s.name: s for s in form_fields("l2i", "shapes-controlnet")}
    assert specs["conditioning_scale"].widget == "float" and specs["check_finite"].widget == "checkbox"
    assert specs["dtype"].widget == "choice" and "float64" in specs["dtype"].choices
    assert specs["variant"].widget == "optional-text" and specs["palette"].widget == "json"
    assert "red circle" in shown_value(specs["palette"])  # the preset's value, not the class default
    unchanged = {name: shown_value(spec) for name, spec in specs.items()}
    assert changed_options("l2i", "shapes-controlnet", unchanged) == {}
    edited = {**unchanged, "conditioning_scale": 0.5, "variant": "fp16", "classes": '{"cat": "animal"}'}
    assert changed_options("l2i", "shapes-controlnet", edited) == {
        "conditioning_scale": 0.5, "variant": "fp16", "classes": {"cat": "animal"}}
    with pytest.raises(RealCompoError, match="option 'classes': not valid JSON"):
        changed_options("l2i", "shapes-controlnet", {**unchanged, "classes": "{cat"})
    sdxl = {s.name: s for s in form_fields("t2i", "sdxl")}
    assert sdxl["force_zeros_for_empty_prompt"].choices == (UNSET, "true", "false")
    assert changed_options("t2i", "sdxl", {"force_zeros_for_empty_prompt": "false"}) == {"force_zeros_for_empty_prompt": False}


# ---- the browser --------------------------------------------------------------------------------
def chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/lib/chromium/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("gradio")
    from realcompo_sdk.ui.app import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = serve(port=port)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture(scope="module")
def browser():
    path = chromium()
    if path is None:
        if os.environ.get("REALCOMPO_REQUIRE_BROWSER"):
            pytest.fail("no chromium found: install Debian's chromium package (apt-get install chromium) or set CHROMIUM")
        pytest.skip("no chromium on this machine (CI installs it)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server, tmp_path, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(server)
    page.locator("#plan").wait_for()
    yield page
    if getattr(request.node, "failed", False):
        shot = Path(os.environ.get("REALCOMPO_UI_ARTIFACTS", tmp_path)) / f"{request.node.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the failure: {shot}")
    context.close()


CANVAS_JS = """() => {
  const c = document.querySelector('#layout canvas.canvas-annotator');
  if (!c || !c.width) return null;
  const r = c.getBoundingClientRect();
  const s = Math.min(1, c.width / SIZE);
  return {left: r.left, top: r.top, kx: r.width / c.width, ky: r.height / c.height, s: s,
          offX: (c.width - Math.round(SIZE * s)) / 2};
}""".replace("SIZE", str(CANVAS))

PAINTED_JS = """([x, y]) => {
  const c = document.querySelector('#layout canvas.canvas-annotator');
  if (!c || !c.width) return false;
  const d = c.getContext('2d').getImageData(Math.round(x), Math.round(y), 1, 1).data;
  return Math.abs(d[0] - 238) + Math.abs(d[1] - 238) + Math.abs(d[2] - 238) > 40;  // not the bare canvas
}"""


def planned_boxes() -> list[dict]:
    from realcompo_sdk import registry

    return to_annotation(registry.create("planner", "rules").plan(PROMPT))["boxes"]


def plan(page) -> tuple[list[dict], dict]:
    page.locator("#prompt textarea").fill(PROMPT)
    page.locator("#plan").click()
    boxes = planned_boxes()
    page.locator("#layout canvas.canvas-annotator").scroll_into_view_if_needed()
    geometry = page.wait_for_function(CANVAS_JS).json_value()
    for box in boxes:
        cx = geometry["offX"] + (box["xmin"] + box["xmax"]) / 2 * geometry["s"]
        cy = (box["ymin"] + box["ymax"]) / 2 * geometry["s"]
        page.wait_for_function(PAINTED_JS, arg=[cx, cy])
    return boxes, page.evaluate(CANVAS_JS)


def to_page(geometry: dict, x: float, y: float) -> tuple[float, float]:
    return (geometry["left"] + (geometry["offX"] + x * geometry["s"]) * geometry["kx"],
            geometry["top"] + y * geometry["s"] * geometry["ky"])


def download(page, link: str, button: str | None = None) -> Path:
    if button is not None:
        page.locator(button).click()
    anchor = page.locator(f"{link} a[download]").first
    anchor.wait_for()
    with page.expect_download() as event:
        anchor.click()
    return Path(event.value.path())


def test_plan_drag_download_generate_and_watch_the_balance(page):
    boxes, geometry = plan(page)
    first = boxes[0]
    x0, y0 = to_page(geometry, (first["xmin"] + first["xmax"]) / 2, (first["ymin"] + first["ymax"]) / 2)
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + 40, y0 + 30, steps=10)
    page.mouse.up()

    layout = Layout.model_validate_json(download(page, "#layout_file", "#export_layout").read_text())
    moved = layout.objects[0].box
    dx = 40 / geometry["kx"] / geometry["s"] / CANVAS
    dy = 30 / geometry["ky"] / geometry["s"] / CANVAS
    assert abs(moved.x0 - (first["xmin"] / CANVAS + dx)) <= 1.5 / CANVAS
    assert abs(moved.y0 - (first["ymin"] / CANVAS + dy)) <= 1.5 / CANVAS
    assert layout.objects[1].phrase == boxes[1]["label"]
    assert abs(layout.objects[1].box.x0 - boxes[1]["xmin"] / CANVAS) <= 1 / CANVAS  # the other box stayed

    page.locator("#steps input").fill(str(STEPS))
    page.locator("#generate").click()
    page.locator("#image img").wait_for()
    frames = page.locator("#influence .thumbnail-item")
    frames.nth(STEPS - 1).wait_for()
    assert frames.count() == STEPS
    assert "shapes-sd" in page.locator("#legend").inner_text() and "shapes-controlnet" in page.locator("#legend").inner_text()
    record = download(page, "#image_file")  # the PNG carries the generation record
    from realcompo_sdk.images import read_record

    data = json.loads(read_record(record))
    assert data["num_steps"] == STEPS and data["layout"]["objects"][0]["box"]["x0"] == pytest.approx(moved.x0)
    if os.environ.get("REALCOMPO_UI_SCREENSHOT"):  # the README's picture, kept small
        from io import BytesIO

        from PIL import Image

        shot = Image.open(BytesIO(page.screenshot(full_page=True))).convert("RGB")
        shot = shot.resize((900, round(shot.height * 900 / shot.width)), Image.LANCZOS)
        shot.quantize(colors=128).save(os.environ["REALCOMPO_UI_SCREENSHOT"], optimize=True)


def test_same_seed_comparison_shows_each_model_alone(page):
    plan(page)
    page.locator("#steps input").fill(str(STEPS))
    page.locator("#compare").click()
    items = page.locator("#comparison .thumbnail-item")
    items.nth(2).wait_for()
    assert items.count() == 3


def test_an_invalid_layout_upload_shows_the_error(page, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 0.6, "y0": 0.1, "x1": 0.2, "y1": 0.5}}]}')
    page.locator("#layout_upload input[type=file]").set_input_files(str(bad))
    toast = page.locator('[data-testid="toast-body"].error [data-testid="toast-text"]')
    toast.wait_for()
    assert "objects[0] ('cat').box" in toast.inner_text() and "inverted" in toast.inner_text()


def test_adapter_options_are_a_form_generated_from_the_options_model(page):
    from realcompo_sdk.images import read_record

    page.locator("#adapter_options").get_by_text("Adapter options").click()
    scale = page.locator("#l2i-option-conditioning_scale input")
    scale.wait_for()
    assert float(scale.input_value()) == 1.0
    assert "red circle" in page.locator("#l2i-option-palette textarea").input_value()  # the preset's value
    assert page.locator("#t2i-option-dtype").is_visible() and page.locator("#t2i-option-check_finite").is_visible()
    scale.fill("0.5")
    scale.press("Tab")
    plan(page)
    page.locator("#steps input").fill(str(STEPS))
    page.locator("#generate").click()
    record = json.loads(read_record(download(page, "#image_file")))
    assert record["adapters"][1]["options"]["conditioning_scale"] == 0.5
    assert record["adapters"][1]["options"]["palette"]["red circle"] == [225, 35, 35]  # untouched: the preset's
