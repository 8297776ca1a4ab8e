"""The `realcompo` command: generate, plan, plugins, new-plugin.

Heavy libraries load only inside the commands that need them: `realcompo --help` and
`realcompo plugins` import no torch.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import RealCompoError


def _parse_pairs(pairs: list[str] | None, flag: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RealCompoError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _planner_options(args: argparse.Namespace) -> dict[str, Any]:
    from . import registry

    options = _parse_pairs(args.planner_option, "--planner-option")
    if getattr(args, "model", None):
        options["model"] = args.model  # an error for planners without a model: the user asked for it
    fields = registry.lookup("planner", args.planner).load_class().Options.model_fields
    # cache flags are harmless no-ops for planners that do not cache (e.g. the offline `rules`)
    if getattr(args, "no_cache", False) and "cache" in fields:
        options["cache"] = False
    if getattr(args, "cache_dir", None) and "cache_dir" in fields:
        options["cache_dir"] = args.cache_dir
    if getattr(args, "replay", False):
        options["replay"] = True
    return options


def _add_planner_args(p: argparse.ArgumentParser, save_layout: bool = True) -> None:
    p.add_argument("--planner", default="rules", help="planner id (default: rules, offline)")
    p.add_argument("--model", help="LLM model name for LLM planners")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the planner cache")
    p.add_argument("--cache-dir", help="planner cache directory")
    p.add_argument("--replay", action="store_true", help="answer from the planner cache only (no API call)")
    p.add_argument("--planner-option", action="append", metavar="KEY=VALUE", help="planner option (repeatable)")
    if save_layout:
        p.add_argument("--save-layout", metavar="PNG", help="also write a picture of the layout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="realcompo", description="Compositional text-to-image generation by balancing T2I and L2I models (RealCompo).")
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate images from a prompt or a layout JSON")
    g.add_argument("prompt", nargs="?", help="text prompt (planned into a layout unless --layout is given)")
    g.add_argument("--layout", metavar="JSON", help="layout file (skips the planner)")
    g.add_argument("-o", "--output", default="realcompo.png", help="output PNG (batch: name-0.png, name-1.png, ...)")
    g.add_argument("--t2i", default="shapes-sd", help="T2I adapter id (default: shapes-sd, bundled, offline)")
    g.add_argument("--l2i", action="append", help="L2I adapter id, repeatable (default: shapes-controlnet, bundled, offline)")
    g.add_argument("--t2i-option", action="append", metavar="KEY=VALUE")
    g.add_argument("--l2i-option", action="append", metavar="KEY=VALUE", help="applied to every L2I adapter")
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="balancer option, e.g. --set t0=10 --set scale_factor=1e5")
    g.add_argument("--mode", default="balanced", choices=["balanced", "t2i", "l2i"], help="t2i/l2i: one model alone (baselines)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--batch", type=int, default=1)
    g.add_argument("--steps", type=int, default=None, help="denoising steps (default: the adapters' preset, else 50)")
    g.add_argument("--guidance", type=float, default=None)
    g.add_argument("--scheduler", help="ddim, pndm, euler, euler_a, dpm, ddpm, unipc (default: the T2I model's)")
    g.add_argument("--negative", default="", help="negative prompt")
    g.add_argument("--height", type=int)
    g.add_argument("--width", type=int)
    g.add_argument("--append-missing-phrases", action="store_true", help="append layout phrases missing from the prompt")
    g.add_argument("--save-influence", metavar="PNG", help="also write a grid of influence maps over the steps")
    g.add_argument("--no-progress", action="store_true", help="no denoising or weight-loading bars")
    g.add_argument("-v", "--verbose", action="store_true",
                   help="also show the warnings and notes of diffusers and transformers (hidden by default)")
    _add_planner_args(g)

    b = sub.add_parser("batch", help="generate many images from a jobs file (JSONL or prompts), resumable, locally or on Ray")
    b.add_argument("jobs", help="JSONL (one job a line: prompt and/or layout, seeds, overrides) or a prompt-per-line file")
    b.add_argument("-o", "--output", required=True, help="output folder: images/ and manifest.jsonl")
    b.add_argument("--engine", default="local", choices=["local", "ray"], help="local: this process; ray: Ray actors")
    b.add_argument("--workers", type=int, default=1, help="ray: model replicas (actors), default 1")
    b.add_argument("--gpus-per-worker", type=float, default=0, help="ray: GPUs per actor (default 0; 1 on a GPU cluster)")
    b.add_argument("--ray-address", help="ray: a running cluster (e.g. auto or ray://HOST:10001); default: start a local one")
    b.add_argument("--batch-size", type=int, default=4, help="images sharing a batched forward (default 4)")
    b.add_argument("--threads", type=int, default=1,
                   help="torch threads per worker (default 1; the same value gives the same bytes on every engine)")
    b.add_argument("--seeds", default="0", help="seeds of jobs that name none: '0,1,5', '0-3' or '0-2,10' (default 0)")
    b.add_argument("--max-failures", type=int, help="stop once more images than this have failed (default: never)")
    b.add_argument("--plan-concurrency", type=int, default=8, help="planner calls in flight at once (default 8)")
    for flag in ("--t2i", "--t2i-option", "--l2i", "--l2i-option", "--set", "--mode", "--steps", "--guidance",
                 "--scheduler", "--negative", "--height", "--width", "--append-missing-phrases", "--no-progress", "-v"):
        action = next(a for a in g._actions if flag in a.option_strings)
        b._add_action(action)
    _add_planner_args(b, save_layout=False)

    u = sub.add_parser("ui", help="the browser app: plan, edit the layout's boxes, generate, watch the balance")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=int, help="port (default: 7860 or the next free one)")
    u.add_argument("--share", action="store_true", help="also open a public Gradio share link (off by default)")

    pl = sub.add_parser("plan", help="print the layout a planner makes for a prompt")
    pl.add_argument("prompt")
    pl.add_argument("--json", action="store_true", help="print JSON only")
    _add_planner_args(pl)

    pg = sub.add_parser("plugins", help="list installed plugins, their ids and load errors")
    pg.add_argument("--json", action="store_true")

    np_ = sub.add_parser("new-plugin", help="write a new plugin distribution (adapter or planner skeleton, tests) from the template")
    np_.add_argument("name", help="plugin id, e.g. my-boxes (distribution realcompo-plugin-my-boxes)")
    np_.add_argument("--kind", required=True, choices=["t2i", "l2i", "planner"], help="what the plugin registers")
    np_.add_argument("--dir", default=".", help="folder to create the distribution in (default: the current one)")
    return parser


def cmd_plan(args: argparse.Namespace) -> int:
    from . import registry
    from .images import layout_overlay, write_atomic

    planner = registry.create("planner", args.planner, **_planner_options(args))
    layout = planner.plan(args.prompt)
    text = layout.model_dump_json(indent=2, exclude_none=True)
    if args.json:
        print(text)
    else:
        print(f"layout by planner {args.planner!r} for {args.prompt!r}:")
        for i, obj in enumerate(layout.objects):
            b = obj.bounding_box()
            print(f"  {i}: {obj.phrase!r:28s} {obj.kind:9s} x0={b.x0:.2f} y0={b.y0:.2f} x1={b.x1:.2f} y1={b.y1:.2f}")
        if layout.background:
            print(f"  background: {layout.background}")
        print(text)
    if args.save_layout:
        picture = layout_overlay(layout)
        write_atomic(args.save_layout, lambda f: picture.save(f, format="PNG"))
        print(f"layout picture: {args.save_layout}", file=sys.stderr)
    return 0


def _read_text(path: Path, flag: str) -> str:
    """A UTF-8 text file, or one clear error saying what the path is instead."""
    if not path.exists():
        raise RealCompoError(f"{flag} {path}: no such file")
    if path.is_dir():
        raise RealCompoError(f"{flag} {path}: is a folder; give the JSON file in it")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RealCompoError(f"{flag} {path}: not a UTF-8 text file (a layout is JSON text)") from None
    except OSError as exc:
        raise RealCompoError(f"{flag} {path}: cannot be read ({exc.strerror})") from None


def _library_output(progress: bool, verbose: bool) -> None:
    """diffusers' and transformers' own chatter: their loading bars follow --no-progress, their log
    messages show only with --verbose (by default only their errors; ours always show)."""
    import importlib

    for name in ("transformers.utils.logging", "diffusers.utils.logging"):
        try:
            logging_module = importlib.import_module(name)
        except ImportError:  # a plugin set without that library
            continue
        if not progress:
            logging_module.disable_progress_bar()
        logging_module.set_verbosity_info() if verbose else logging_module.set_verbosity_error()


def cmd_generate(args: argparse.Namespace) -> int:
    from . import registry
    from .compose import DEFAULT_L2I, RealCompo
    from .images import check_output, influence_grid, layout_overlay, save_png, write_atomic
    from .layout import load_layout
    from .settings import check_balance, check_sampling

    if args.prompt is None and args.layout is None:
        raise RealCompoError("give a prompt or --layout FILE")
    layout = None
    if args.layout:
        layout = load_layout(_read_text(Path(args.layout), "--layout"))
    l2i_ids = args.l2i or [DEFAULT_L2I]
    l2i_options = _parse_pairs(args.l2i_option, "--l2i-option")
    # Everything that can be checked without the models is checked before they load.
    check_sampling(seed=args.seed, batch_size=args.batch, height=args.height, width=args.width, num_steps=args.steps,
                   guidance_scale=args.guidance, mode=args.mode, negative_prompt=args.negative)  # fmt: skip
    out = Path(args.output)
    paths = [out] if args.batch == 1 else [out.with_name(f"{out.stem}-{b}{out.suffix}") for b in range(args.batch)]
    targets = [(p, "-o") for p in paths] + [(Path(p), flag) for p, flag in
                                            ((args.save_layout, "--save-layout"), (args.save_influence, "--save-influence")) if p]  # fmt: skip
    replaced = {p for p, flag in targets if check_output(p, flag)}
    balance = _parse_pairs(args.set, "--set")
    check_balance(balance)  # typos before any planning or loading (RealCompo checks it with the preset too)
    registry.lookup("t2i", args.t2i)
    for l2i_id in l2i_ids:
        registry.lookup("l2i", l2i_id)
    planner = None
    if layout is None:  # plan before the models load: a missing key or a bad prompt costs no waiting
        planner = registry.create("planner", args.planner, **_planner_options(args))
        layout = planner.plan(args.prompt)
    _library_output(progress=not args.no_progress, verbose=args.verbose)
    rc = RealCompo(
        t2i=args.t2i, l2i=l2i_ids, planner=planner,
        t2i_options=_parse_pairs(args.t2i_option, "--t2i-option"),
        l2i_options=[dict(l2i_options) for _ in l2i_ids],
        balance=balance, scheduler=args.scheduler,
        append_missing_phrases=args.append_missing_phrases,
        **({"num_steps": args.steps} if args.steps is not None else {}),
        **({"guidance_scale": args.guidance} if args.guidance is not None else {}),
    )
    result = rc(args.prompt, layout=layout, seed=args.seed, batch_size=args.batch, negative_prompt=args.negative,
                height=args.height, width=args.width, mode=args.mode,
                record_influence=bool(args.save_influence), progress=not args.no_progress)
    record_json = result.record.model_dump_json(exclude_none=True)

    def wrote(path: str | Path) -> None:
        print(f"wrote {path}" + (" (replaced the existing file)" if Path(path) in replaced else ""))

    for image, path in zip(result.images, paths):
        save_png(image, path, record_json)
        wrote(path)
    if args.save_layout:
        picture = layout_overlay(result.record.layout, result.images[0])
        write_atomic(args.save_layout, lambda f: picture.save(f, format="PNG"))
        wrote(args.save_layout)
    if args.save_influence and result.influence:
        names = [a["id"] for a in result.record.adapters]
        grid = influence_grid(result.influence, names)
        write_atomic(args.save_influence, lambda f: grid.save(f, format="PNG"))
        wrote(args.save_influence)
    return 0


def l2i_regions(report: Any) -> dict[str, dict[str, Any]]:
    """Per L2I id: the region kinds it accepts and its object limit, or why its code cannot load.
    Imports each adapter's module (not its weights)."""
    regions: dict[str, dict[str, Any]] = {}
    for (kind, id_), registration in sorted(report.registrations.items()):
        if kind != "l2i":
            continue
        try:
            cls = registration.load_class()
        except RealCompoError as exc:
            regions[id_] = {"error": str(exc)}
            continue
        regions[id_] = {"kinds": sorted(getattr(cls, "accepted_kinds", ())), "max_objects": getattr(cls, "max_objects", None)}
    return regions


def cmd_batch(args: argparse.Namespace) -> int:
    from .batch import BatchOptions, ModelConfig, parse_seeds, run_batch
    from .compose import DEFAULT_L2I
    from .settings import check_sampling

    check_sampling(num_steps=args.steps, guidance_scale=args.guidance, height=args.height, width=args.width,
                   mode=args.mode, negative_prompt=args.negative)
    if args.threads < 1:
        raise RealCompoError("--threads must be at least 1")
    model = ModelConfig(t2i=args.t2i, l2i=args.l2i or [DEFAULT_L2I], t2i_options=_parse_pairs(args.t2i_option, "--t2i-option"),
                        l2i_options=_parse_pairs(args.l2i_option, "--l2i-option"), balance=_parse_pairs(args.set, "--set"),
                        scheduler=args.scheduler, append_missing_phrases=args.append_missing_phrases, threads=args.threads)
    options = BatchOptions(
        jobs=args.jobs, output=args.output, engine=args.engine, workers=args.workers, batch_size=args.batch_size,
        gpus_per_worker=args.gpus_per_worker,
        ray_address=args.ray_address, max_failures=args.max_failures, seeds=parse_seeds(args.seeds),
        defaults={"negative_prompt": args.negative, "num_steps": args.steps, "guidance_scale": args.guidance,
                  "height": args.height, "width": args.width, "mode": args.mode},
        planner=args.planner, planner_options=_planner_options(args), plan_concurrency=args.plan_concurrency,
        progress=not args.no_progress)
    _library_output(progress=not args.no_progress, verbose=args.verbose)
    summary = run_batch(options, model, log=lambda line: print(line, file=sys.stderr))
    seconds = ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items())
    print(f"{summary.images} images written, {summary.skipped} already done, {len(summary.failures)} failed "
          f"({summary.images_per_second:.2f} images/s; {seconds}) -> {Path(args.output) / 'manifest.jsonl'}")
    if summary.stopped:
        print(summary.stopped, file=sys.stderr)
    return 1 if summary.failures else 0


def cmd_ui(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
        import gradio_image_annotation  # noqa: F401
    except ImportError:
        raise RealCompoError("realcompo ui needs Gradio: pip install 'realcompo-sdk[ui]'") from None
    from .ui.app import serve

    _library_output(progress=True, verbose=False)
    try:
        app = serve(host=args.host, port=args.port, share=args.share)
    except OSError as exc:  # Gradio's "Cannot find empty port", or an address this machine does not have
        where = f"{args.host}:{args.port}" if args.port else args.host
        raise RealCompoError(f"realcompo ui cannot listen on {where} ({str(exc).split('.')[0]}); choose another "
                             "--port, or leave --port out to take the next free one from 7860") from None
    print(f"realcompo ui on {app.local_url}" + (f" and {app.share_url}" if args.share else "") + " (Ctrl-C stops it)")
    app.block_thread()
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    from . import registry

    report = registry.report()
    regions = l2i_regions(report)
    if args.json:
        print(json.dumps({
            "plugins": [vars(p) for p in report.plugins],
            "ids": {f"{k}:{i}": {"distribution": r.distribution, "plugin": r.plugin,
                                 **({"regions": regions[i]} if k == "l2i" else {})}
                    for (k, i), r in sorted(report.registrations.items())},
            "conflicts": {f"{k}:{i}": dists for (k, i), dists in sorted(report.conflicts.items())},
            "problems": report.problems,
        }, indent=2))
        return 0
    if report.conflicts:  # first: an id nobody can use until the user picks a distribution
        print("ID CONFLICTS: these ids are registered by several distributions and are not used until you pick one")
        for (kind, id_), dists in sorted(report.conflicts.items()):
            print(f"  {kind} {id_!r}: {', '.join(dists)} -> use {' or '.join(f'{d}:{id_}' for d in dists)}")
        print()
    print(f"{'plugin':24s} {'distribution':34s} {'version':9s} {'status':8s} ids")
    for p in report.plugins:
        print(f"{p.name:24s} {p.distribution:34s} {p.version:9s} {p.status:8s} {', '.join(p.ids) or '-'}")
    if regions:
        print()
        print(f"{'L2I adapter':24s} {'regions it takes':34s} max objects")
        for id_, info in regions.items():
            if "error" in info:
                print(f"{id_:24s} cannot load: {info['error']}")
            else:
                print(f"{id_:24s} {', '.join(info['kinds']):34s} {info['max_objects'] or 'no limit'}")
    for problem in report.problems:
        print(f"problem: {problem}")
    return 0


def cmd_new_plugin(args: argparse.Namespace) -> int:
    from .scaffold import plugin_names, render_plugin

    path = render_plugin(args.name, args.kind, args.dir)
    names = plugin_names(args.name, args.kind)
    print(f"wrote {path}")
    print("next steps:")
    print(f"  pip install -e {path}")
    print(f"  realcompo plugins        # lists {names.kind}:{names.id}")
    print(f"  pytest {path}            # entry point, light import, contract")
    print(f"  then edit {path / names.package / (names.module + '.py')}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Before torch loads: idle OpenMP threads sleep instead of spinning. On a busy 2-core machine
    # spinning threads made a 10 s generation take 70 s; on an idle one it costs nothing visible.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"generate": cmd_generate, "batch": cmd_batch, "ui": cmd_ui, "plan": cmd_plan, "plugins": cmd_plugins,
                "new-plugin": cmd_new_plugin}
    try:
        return handlers[args.command](args)
    except RealCompoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outputs are written atomically, so nothing half-written is left
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `realcompo plugins --json | head`: the reader left, not an error of ours
        try:  # point stdout at /dev/null, so flushing it at exit raises no second error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, io.UnsupportedOperation):  # stdout is not a real file (embedded use)
            pass
        return 0
    except Exception as exc:
        from pydantic import ValidationError

        if isinstance(exc, ValidationError):
            from .layout import format_validation_error

            title = str(getattr(exc, "title", ""))
            what = "layout" if title.startswith(("Layout", "Box", "Mask", "RLE", "Keypoint")) else f"options ({title})"
            print(f"error: {format_validation_error(exc, what=what)}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    raise SystemExit(main())
