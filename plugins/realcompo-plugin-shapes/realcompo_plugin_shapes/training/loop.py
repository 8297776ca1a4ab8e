"""The training loop every Shapes training stage shares: AdamW with warm-up and a cosine decay over
the stage's *time*, gradient clipping, an EMA of the weights, a JSONL loss log, and checkpoints
that a rerun resumes from."""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


class JsonlLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, **record: Any) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


@dataclass
class StageResult:
    name: str
    steps: int = 0
    seconds: float = 0.0
    allotted_seconds: float = 0.0
    final_loss: float | None = None
    samples_seen: int = 0
    done: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Ema:
    """Exponential moving average of a list of parameters (with the usual warm-up)."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params = params
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        for s, p in zip(self.shadow, self.params):
            p.copy_(s.to(p.dtype))


def train_stage(
    name: str,
    params: list[torch.nn.Parameter],
    loss_fn: Callable[[int], torch.Tensor],
    *,
    lr: float,
    allotted: float,
    batch_size: int,
    args: argparse.Namespace,
    ckpt_path: Path,
    modules: dict[str, torch.nn.Module],
    log: JsonlLog,
    warmup_steps: int = 200,
) -> StageResult:
    """Optimise `params` on `loss_fn(step)` until the stage's time (or --max-steps) runs out.

    AdamW, linear warm-up then a cosine decay over the stage's *time* (to 10 %), gradient clip 1,
    EMA of the parameters (copied into them at the end). Resumes from `ckpt_path`.
    """
    # No weight decay on gains, biases, norms and GLIGEN's scalar gates (decay would pull the
    # gates shut).
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = args.device.startswith("cuda")
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99), fused=fused)
    ema = Ema(params, args.ema_decay)
    result = StageResult(name, allotted_seconds=allotted)
    step, elapsed, loss_avg = 0, 0.0, None
    if ckpt_path.exists() and not args.no_resume:
        state = torch.load(ckpt_path, map_location=args.device, weights_only=True)
        for key, module in modules.items():
            module.load_state_dict(state["modules"][key])
        opt.load_state_dict(state["optimizer"])
        ema.shadow = [t.to(args.device) for t in state["ema"]]
        step, elapsed, loss_avg = state["step"], state["elapsed"], state["loss_avg"]
        result.allotted_seconds = allotted = state["allotted"]
        if state["done"]:
            ema.copy_to_params()
            result.steps, result.seconds, result.final_loss, result.done = step, elapsed, loss_avg, True
            result.samples_seen = step * batch_size
            print(f"[{name}] already trained ({step} steps), loaded {ckpt_path}", flush=True)
            return result
        print(f"[{name}] resuming at step {step} ({elapsed:.0f}s of {allotted:.0f}s)", flush=True)

    def save(done: bool) -> None:
        tmp = ckpt_path.with_suffix(".tmp")
        torch.save(
            {
                "modules": {k: m.state_dict() for k, m in modules.items()},
                "optimizer": opt.state_dict(),
                "ema": ema.shadow,
                "step": step,
                "elapsed": elapsed,
                "loss_avg": loss_avg,
                "allotted": allotted,
                "done": done,
            },
            tmp,
        )
        os.replace(tmp, ckpt_path)

    bar = None
    if not args.no_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=round(allotted), initial=round(elapsed), unit="s", desc=f"{name:6s}", dynamic_ncols=True)
    start, last_ckpt = time.perf_counter() - elapsed, time.perf_counter()
    for p in params:
        p.requires_grad_(True)
    window = torch.zeros((), device=args.device)  # loss summed on the device since the last log
    window_steps = 0
    while True:
        elapsed = time.perf_counter() - start
        if elapsed >= allotted or (args.max_steps is not None and step >= args.max_steps):
            break
        frac = min(1.0, elapsed / max(allotted, 1e-6))
        cur_lr = lr * min(1.0, (step + 1) / warmup_steps) * (0.1 + 0.45 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = cur_lr
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema.update(step)
        step += 1
        window += loss.detach()
        window_steps += 1
        if step % 25 == 0 or step == 1:
            # Mean loss over the steps since the last record; the only host sync, every 25 steps.
            loss_avg = float(window) / window_steps
            window.zero_()
            window_steps = 0
            log.write(stage=name, step=step, loss=loss_avg, lr=cur_lr, elapsed=round(elapsed, 2))
            if bar is not None:
                bar.set_postfix(step=step, loss=f"{loss_avg:.4f}")
                bar.update(max(0, round(elapsed) - bar.n))
        if time.perf_counter() - last_ckpt >= args.checkpoint_every:
            save(done=False)
            last_ckpt = time.perf_counter()
    if window_steps:
        loss_avg = float(window) / window_steps
    ema.copy_to_params()
    # The EMA now lives in the parameters; the checkpoint keeps it in both places.
    save(done=True)
    if bar is not None:
        bar.update(max(0, round(elapsed) - bar.n))
        bar.close()
    result.steps, result.seconds, result.final_loss, result.done = step, elapsed, loss_avg, True
    result.samples_seen = step * batch_size
    print(f"[{name}] {step} steps in {elapsed:.1f}s, loss {loss_avg}", flush=True)
    return result


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    )


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
