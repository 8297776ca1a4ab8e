"""Bad numbers and unwritable outputs fail before any model loads, with one clear error
(CLI and API share `realcompo_sdk.settings`)."""

from __future__ import annotations

import os
import time

import pytest

from realcompo_sdk import Layout, RealCompo, registry
from realcompo_sdk.cli import main
from realcompo_sdk.errors import RealCompoError
from realcompo_sdk.images import write_atomic
from realcompo_sdk.settings import check_sampling
from realcompo_sdk.testing.fakes import TinyL2IAdapter, TinyT2IAdapter

TINY = ["--t2i", "tiny-t2i", "--l2i", "tiny-l2i", "--planner", "fixed", "--no-progress"]
LAYOUT = Layout.from_boxes("a red cat", [("red cat", (0.1, 0.1, 0.6, 0.6))])


@pytest.fixture
def no_loading(tiny_registry, monkeypatch):
    """Any adapter or planner creation fails the test: the error must come before it."""

    create = registry.create

    def refuse(kind, id, **options):
        if kind == "planner":  # planning comes before loading, on purpose
            return create(kind, id, **options)
        raise AssertionError(f"{kind} {id!r} was created before the input was checked")

    monkeypatch.setattr(registry, "create", refuse)


BAD_CLI = {
    "zero steps": (["--steps", "0"], "num_steps: Input should be greater than or equal to 1 (got 0)"),
    "negative steps": (["--steps", "-2"], "num_steps: Input should be greater than or equal to 1 (got -2)"),
    "NaN guidance": (["--guidance", "nan"], "guidance_scale: Input should be a finite number"),
    "negative guidance": (["--guidance", "-1"], "guidance_scale: Input should be greater than or equal to 0"),
    "empty batch": (["--batch", "0"], "batch_size: Input should be greater than or equal to 1 (got 0)"),
    "negative seed": (["--seed", "-1"], "seed: Input should be greater than or equal to 0 (got -1)"),
    "seed beyond 64 bits": (["--seed", str(2**64)], "seed: Input should be less than or equal to"),
    "zero height": (["--height", "0"], "height: Input should be greater than or equal to 8 (got 0)"),
    "negative width": (["--width", "-64"], "width: Input should be greater than or equal to 8 (got -64)"),
    "negative scale_range": (["--set", "scale_range=[-1, 0.5]"], "scale_range must be two finite numbers ≥ 0"),
    "NaN scale_factor": (["--set", "scale_factor=NaN"], "scale_factor: Input should be a finite number"),
    "misspelt option": (["--set", "scale_facter=1e5"], "'scale_facter' (did you mean 'scale_factor'?)"),
    "warm-up as long as the run": (["--steps", "5", "--set", "t0=5"], "t0=5 is not below num_steps=5"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLI))
def test_cli_refuses_bad_numbers_before_loading(no_loading, tmp_path, capsys, case):
    flags, expected = BAD_CLI[case]
    assert main(["generate", "cat", "-o", str(tmp_path / "o.png"), *TINY, *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "o.png").exists()


def test_cli_refuses_outputs_it_cannot_write_before_loading(no_loading, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    (tmp_path / "folder.png").mkdir()
    cases = {
        str(tmp_path / "o.jpg"): "the file is a PNG (with the generation record inside); give it a .png name",
        str(tmp_path / "folder.png"): "is a folder; give a file name such as",
        str(a_file / "o.png"): f"{a_file} is a file, not a folder",
    }
    for output, expected in cases.items():
        assert main(["generate", "cat", "-o", output, *TINY]) == 2
        assert expected in capsys.readouterr().err
    assert main(["generate", "cat", "-o", str(tmp_path / "o.png"), "--save-layout", str(tmp_path / "l.gif"), *TINY]) == 2
    assert "--save-layout" in capsys.readouterr().err


def test_an_existing_output_is_replaced_and_the_cli_says_so(tiny_registry, tmp_path, capsys):
    out = tmp_path / "deep" / "o.png"  # missing folders are made
    args = ["generate", "cat", "-o", str(out), *TINY, "--steps", "2", "--set", "t0=1"]
    assert main(args) == 0 and capsys.readouterr().out.strip() == f"wrote {out}"
    assert main(args) == 0 and capsys.readouterr().out.strip() == f"wrote {out} (replaced the existing file)"


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path):
    target = tmp_path / "o.png"
    stale, fresh = tmp_path / ".o.png.abc.part", tmp_path / ".o.png.def.part"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    write_atomic(target, lambda f: f.write(b"png"))
    assert target.read_bytes() == b"png" and not stale.exists() and fresh.exists()


def test_api_checks_numbers_before_loading_and_at_each_call(no_loading):
    with pytest.raises(RealCompoError, match="num_steps: Input should be greater than or equal to 1"):
        RealCompo(t2i="tiny-t2i", l2i="tiny-l2i", num_steps=0)
    with pytest.raises(RealCompoError, match="guidance_scale: Input should be a finite number"):
        RealCompo(t2i="tiny-t2i", l2i="tiny-l2i", guidance_scale=float("nan"))
    with pytest.raises(RealCompoError, match="unknown balancer option"):
        RealCompo(t2i="tiny-t2i", l2i="tiny-l2i", balance={"t_0": 3})


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"seed": True}, "seed must be a number, not True/False"),
        ({"seed": 1.5}, "seed: Input should be a valid integer, got a number with a fractional part"),
        ({"num_steps": 0}, "num_steps: Input should be greater than or equal to 1"),
        ({"batch_size": -1}, "batch_size: Input should be greater than or equal to 1"),
        ({"mode": "both"}, "mode: Input should be 'balanced', 't2i' or 'l2i'"),
        ({"height": 0}, "height: Input should be greater than or equal to 8"),
    ],
)
def test_each_call_is_checked_before_sampling(values, expected):
    rc = RealCompo(t2i=TinyT2IAdapter(seed=0), l2i=TinyL2IAdapter(seed=1), planner=None, num_steps=2,
                   balance={"t0": 1})  # fmt: skip
    with pytest.raises(RealCompoError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        rc(layout=LAYOUT, **values)


def test_whole_floats_are_accepted_as_integers():
    assert check_sampling(seed=3.0, num_steps=4.0).num_steps == 4


def test_unknown_l2i_and_planner_ids_fail_before_the_t2i_model_loads(no_loading, tmp_path, capsys):
    assert main(["generate", "cat", "-o", str(tmp_path / "o.png"), "--t2i", "tiny-t2i", "--l2i", "tiny-l2", "--no-progress"]) == 2
    assert "no L2I adapter with id 'tiny-l2'" in capsys.readouterr().err
    with pytest.raises(RealCompoError, match="planner"):
        RealCompo(t2i="tiny-t2i", l2i="tiny-l2i", planner="no-such-planner")


def test_layout_files_and_prompts_are_checked_before_loading(no_loading, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "binary.json").write_bytes(bytes(range(128, 256)))
    (tmp_path / "pixels.json").write_text(
        '{"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 10, "y0": 10, "x1": 100, "y1": 200}}]}')
    cases = {
        ("--layout", str(tmp_path / "missing.json")): "missing.json: no such file",
        ("--layout", str(tmp_path / "folder")): "folder: is a folder; give the JSON file in it",
        ("--layout", str(tmp_path / "binary.json")): "binary.json: not a UTF-8 text file",
        ("--layout", str(tmp_path / "pixels.json")): "box coordinates are fractions of the image in [0, 1], not pixels",
        ("--planner", "rules", ""): "the 'rules' planner got an empty prompt",
    }
    for flags, expected in cases.items():
        assert main(["generate", *flags, "-o", str(tmp_path / "o.png"), "--t2i", "tiny-t2i", "--l2i", "tiny-l2i"]) == 2
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, err


def test_adapter_options_and_roles_are_checked_before_loading(no_loading):
    with pytest.raises(RealCompoError, match=r"invalid options of T2I adapter 'tiny-t2i' .*\n  colour: Extra inputs"):
        RealCompo(t2i="tiny-t2i", l2i="tiny-l2i", t2i_options={"colour": "red"})
    with pytest.raises(RealCompoError, match=r"'tiny-l2i' is an installed L2I adapter, not a T2I adapter; pass it as --l2i"):
        RealCompo(t2i="tiny-l2i", l2i="tiny-l2i")


def test_an_output_folder_is_named_as_a_folder_whatever_its_name(no_loading, tmp_path, capsys):
    (tmp_path / "renders").mkdir()
    assert main(["generate", "cat", "-o", str(tmp_path / "renders"), *TINY]) == 2
    assert "renders: is a folder; give a file name such as" in capsys.readouterr().err
