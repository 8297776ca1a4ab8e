"""The Shapes benchmark end to end on 2 captions × 2 seeds, 2 steps: scores, intervals, pictures, merge."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")

from realcompo_plugin_shapes.bench import bootstrap, main, paired_difference  # noqa: E402

BASE = ["--prompts", "2", "--seeds", "2", "--steps", "2", "--l2i", "shapes-controlnet", "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    assert main([*BASE, "--methods", "t2i,shapes-controlnet", "--out", str(root / "a")]) == 0
    assert main([*BASE, "--methods", "rc:shapes-controlnet", "--out", str(root / "b")]) == 0
    return root


def test_a_run_scores_every_image_and_keeps_it(runs):
    results = json.loads((runs / "a" / "results.json").read_text())
    assert set(results["methods"]) == {"t2i", "shapes-controlnet"}
    records = results["methods"]["t2i"]["images"]
    assert [r["seed"] for r in records] == [0, 1, 100, 101]  # caption i, seeds 100·i + s
    assert all(0 <= r["realism"] <= 1 and 0 <= r["success"] <= 1 for r in records)
    assert (runs / "a" / "images" / "t2i" / "101.png").exists() and (runs / "a" / "grid.png").exists()
    assert "| T2I alone (shapes-sd) |" in (runs / "a" / "results.md").read_text()


def test_merged_runs_report_differences_and_the_effective_balancer(runs, tmp_path):
    assert main(["--merge", str(runs / "a"), str(runs / "b"), "--out", str(tmp_path / "m")]) == 0
    text = (tmp_path / "m" / "results.md").read_text()
    assert "RealCompo (shapes-sd + shapes-controlnet) − T2I alone (shapes-sd)" in text
    results = json.loads((tmp_path / "m" / "results.json").read_text())
    balance = results["methods"]["rc:shapes-controlnet"]["balance"]
    assert {"scale_factor", "t0", "attention_resolution"} <= set(balance)
    assert (tmp_path / "m" / "grid.png").exists()


def test_merge_refuses_runs_of_different_settings(runs, tmp_path):
    other = tmp_path / "c"
    assert main([*BASE[:-1], "--seeds", "1", "--methods", "t2i", "--out", str(other), "--no-progress"]) == 0
    with pytest.raises(SystemExit, match="differ in"):
        main(["--merge", str(runs / "a"), str(other), "--out", str(tmp_path / "m")])


def test_merge_refuses_a_method_twice_and_names_each_rows_balancer_when_runs_differ(runs, tmp_path):
    again = tmp_path / "again"
    assert main([*BASE, "--methods", "rc:shapes-controlnet,fixed:shapes-controlnet", "--set", "t0=1", "--out", str(again)]) == 0
    with pytest.raises(SystemExit, match=r"\['rc:shapes-controlnet'\] are in more than one run"):
        main(["--merge", str(runs / "b"), str(again), "--out", str(tmp_path / "m")])
    # run b used the preset's t0, run `again` t0=1: merged, each balanced row says which it ran with
    fixed_only = tmp_path / "fixed"
    assert main([*BASE, "--methods", "fixed:shapes-controlnet", "--set", "t0=1", "--out", str(fixed_only)]) == 0
    assert main(["--merge", str(runs / "b"), str(fixed_only), "--out", str(tmp_path / "m")]) == 0
    text = (tmp_path / "m" / "results.md").read_text()
    assert "Balancer of the RealCompo rows: given on each row" in text
    assert "| RealCompo (shapes-sd + shapes-controlnet) [scale_factor=1000000.0, t0=15," in text
    assert "| fixed equal weights (shapes-sd + shapes-controlnet) [scale_factor=0.0, t0=1," in text


def test_unknown_methods_are_refused_with_the_known_ones(capsys):
    with pytest.raises(SystemExit):
        main(["--methods", "rc:nope", "--l2i", "shapes-controlnet"])
    assert "unknown method(s) ['rc:nope']" in capsys.readouterr().err


def test_intervals_resample_captions_and_pair_them():
    records = [{"caption": c, "success": float(c % 2)} for c in range(10) for _ in range(2)]
    mean, low, high = bootstrap(records, "success")
    assert mean == 0.5 and 0.1 < low < 0.5 < high < 0.9
    better = [{"caption": c, "success": 1.0} for c in range(10)]
    diff = paired_difference(better, records, "success")
    assert diff[0] == 0.5 and diff[1] > 0  # the interval excludes zero
    assert bootstrap([{"caption": 0, "success": None}], "success") is None
