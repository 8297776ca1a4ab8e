"""The `realcompo` command, run in-process on the testing kit's tiny adapters."""

from __future__ import annotations

import json
import re

import pytest

from realcompo_sdk.cli import main
from realcompo_sdk.images import read_record, write_atomic

TINY = ["--t2i", "tiny-t2i", "--l2i", "tiny-l2i", "--steps", "3", "--no-progress", "--set", "t0=1"]


def test_generate_writes_png_with_record_layout_and_influence(tiny_registry, tmp_path, capsys):
    out = tmp_path / "img.png"
    code = main(["generate", "red cat and blue dog", "--planner", "fixed", "-o", str(out), *TINY,
                 "--save-layout", str(tmp_path / "layout.png"), "--save-influence", str(tmp_path / "influence.png")])
    assert code == 0
    record = json.loads(read_record(out))
    assert record["prompt"] == "red cat and blue dog"
    assert [o["phrase"] for o in record["layout"]["objects"]] == ["red", "cat", "blue", "dog"]
    assert record["seeds"] == [0] and record["passes"]["backward"] == 2
    assert (tmp_path / "layout.png").stat().st_size > 0 and (tmp_path / "influence.png").stat().st_size > 0
    assert not list(tmp_path.glob("*.part"))


def test_batch_writes_one_file_per_sample(tiny_registry, tmp_path):
    assert main(["generate", "cat", "--planner", "fixed", "-o", str(tmp_path / "x.png"), "--batch", "2", *TINY]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["x-0.png", "x-1.png"]
    assert json.loads(read_record(tmp_path / "x-1.png"))["seeds"] == [0, 1]


def test_generate_from_layout_file(tiny_registry, tmp_path):
    layout = {"prompt": "a cat and a dog", "objects": [
        {"phrase": "cat", "box": {"x0": 0, "y0": 0, "x1": 0.5, "y1": 0.5}},
        {"phrase": "dog", "box": {"x0": 0.5, "y0": 0.5, "x1": 1, "y1": 1}}]}
    path = tmp_path / "layout.json"
    path.write_text(json.dumps(layout))
    assert main(["generate", "--layout", str(path), "-o", str(tmp_path / "o.png"), *TINY]) == 0
    assert json.loads(read_record(tmp_path / "o.png")).get("planner") is None


def test_invalid_layout_file_names_object_and_field(tiny_registry, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"prompt": "a cat", "objects": [{"phrase": "cat", "box": {"x0": 0.6, "y0": 0, "x1": 0.5, "y1": 1}}]}))
    assert main(["generate", "--layout", str(path), "-o", str(tmp_path / "o.png"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "objects[0] ('cat').box" in err and "x0 < x1" in err
    assert not (tmp_path / "o.png").exists()


def test_unknown_adapter_suggests_close_ids(tiny_registry, tmp_path, capsys):
    assert main(["generate", "cat", "--planner", "fixed", "-o", str(tmp_path / "o.png"), "--t2i", "tiny-t2", "--l2i", "tiny-l2i"]) == 2
    assert "Did you mean 'tiny-t2i'" in capsys.readouterr().err


def test_bad_balancer_option_is_reported(tiny_registry, tmp_path, capsys):
    assert main(["generate", "cat", "--planner", "fixed", "-o", str(tmp_path / "o.png"), *TINY, "--set", "scale_factr=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown balancer option(s) 'scale_factr' (did you mean 'scale_factor'?)" in err and "layout" not in err


def test_unknown_adapter_option_is_reported_as_an_option(tiny_registry, tmp_path, capsys):
    assert main(["generate", "cat", "--planner", "fixed", "-o", str(tmp_path / "o.png"), *TINY, "--l2i-option", "colour=red"]) == 2
    err = capsys.readouterr().err
    assert "colour" in err and "invalid options" in err


def test_plan_prints_layout_json(tiny_registry, capsys):
    assert main(["plan", "a red circle to the left of a blue square", "--json"]) == 0
    layout = json.loads(capsys.readouterr().out)
    assert [o["phrase"] for o in layout["objects"]] == ["red circle", "blue square"]
    assert layout["objects"][0]["box"]["x1"] <= layout["objects"][1]["box"]["x0"]


def test_plugins_lists_builtin_and_testing_ids(tiny_registry, capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "planner:rules" in data["ids"] and "t2i:tiny-t2i" in data["ids"]
    assert data["ids"]["l2i:tiny-l2i"]["regions"] == {"kinds": ["box", "keypoints", "mask"], "max_objects": 8}


def test_plugins_lists_the_regions_each_l2i_adapter_takes(tiny_registry, capsys):
    from realcompo_sdk import registry

    assert main(["plugins"]) == 0
    table = capsys.readouterr().out.split("L2I adapter", 1)[1]
    assert re.search(r"\ntiny-l2i +box, keypoints, mask +8\n", table)
    # an adapter whose code is gone is reported in the table, not a crash
    broken = registry.report().registrations[("l2i", "tiny-l2i")]
    broken.target = "realcompo_no_such_module:Adapter"
    assert main(["plugins"]) == 0
    assert re.search(r"\ntiny-l2i +cannot load: .*realcompo_no_such_module", capsys.readouterr().out)


def test_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.png"

    def explode(f):
        f.write(b"half a png")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, explode)
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_written_files_get_the_usual_permissions(tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    target = write_atomic(tmp_path / "f.png", lambda f: f.write(b"x"))
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


def test_plugins_lists_id_conflicts_first(tiny_registry, capsys):
    from realcompo_sdk import registry

    registry.report().conflicts[("t2i", "echo")] = ["acme-models", "other-models"]
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ID CONFLICTS")
    assert "t2i 'echo': acme-models, other-models -> use acme-models:echo or other-models:echo" in out
    assert main(["plugins", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["conflicts"] == {"t2i:echo": ["acme-models", "other-models"]}


@pytest.mark.parametrize(
    ("command", "handler", "raised", "code", "stderr"),
    [
        (["plan", "a cat"], "cmd_plan", KeyboardInterrupt, 130, "interrupted\n"),  # Ctrl-C: one line
        (["plugins", "--json"], "cmd_plugins", BrokenPipeError, 0, ""),  # `| head` left: not an error
    ],
    ids=["ctrl-c", "closed-pipe"],
)
def test_the_environment_never_prints_a_traceback(tiny_registry, monkeypatch, capsys, command, handler, raised, code, stderr):
    import realcompo_sdk.cli as cli

    def interrupted(args):
        raise raised

    monkeypatch.setattr(cli, handler, interrupted)
    assert main(command) == code
    assert capsys.readouterr().err == stderr


def test_optional_extras_missing_are_one_line_with_the_install_command(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "gradio", None)  # as if `realcompo-sdk[ui]` were not installed
    assert main(["ui"]) == 2
    assert "pip install 'realcompo-sdk[ui]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    jobs = tmp_path / "prompts.txt"
    jobs.write_text("a red circle\n")
    assert main(["batch", str(jobs), "-o", str(tmp_path / "out"), "--engine", "ray", "--steps", "2", "--no-progress"]) == 2
    assert "pip install 'realcompo-sdk[ray]'" in capsys.readouterr().err


def test_ui_on_a_port_in_use_is_one_clear_error(capsys):
    pytest.importorskip("gradio")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and "Traceback" not in err
