"""Training throughput of the six model variants on CPU, and what the attention and the
sampler update cost.

Measures, for one configuration, the median time of a full training step (forward, backward,
optimiser step, sampler update) per variant; the attention's cost as the ratio of the full
variant's step to the backbone-only step (target <= 2x); the vectorised sampler update's share
of a step (target < 5%); the per-quantile loop update for comparison; and an evaluation pass
(``--eval-windows`` windows at the 99 test levels and the 39 validation levels, without
gradients) in the model's chunks of ``EVAL_CHUNK_ROWS`` rows against one call (target: chunks
faster). When the attention ratio misses its target, smaller attention sizes are tried and
those meeting it are listed.

On a GPU (``--device cuda``) the same table is timed in the chosen autocast precision, and
``--sync-check`` runs each piece of a step under ``torch.cuda.set_sync_debug_mode("error")``:
the sampler's draw, the forward pass with the loss and the sampler's update, the backward pass,
the fused optimiser step, the weight average's update, a validation forecast and the scorer's
update; any piece that makes the host wait for the device is named with the line that did.

    python benchmarks/bench_model.py                 # defaults: 2 threads, batch 256
    python benchmarks/bench_model.py --threads 8 --repeats 20
    python benchmarks/bench_model.py --device cuda --precision bf16 --batch 1024 --sync-check
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from anyq.model import QuantileSampler, build_forecaster
from anyq.metrics.levels import evaluation_grid
from anyq.metrics.scorer import ForecastScorer
from anyq.training.averaging import warmed_up_ema
from anyq.model.forecaster import EVAL_CHUNK_ROWS
from anyq.sweeping.cost import median_seconds
from anyq.training.config_tree import VARIANTS, variant_config

ATTENTION_TARGET = 2.0
UPDATE_SHARE_TARGET = 0.05
#: Smaller attention sizes tried when the defaults miss the cost target:
#: (d_model, n_heads, num_blocks, d_ff).
CANDIDATES = [(64, 4, 1, 128), (48, 4, 2, 96), (32, 4, 2, 64), (32, 2, 2, 64), (32, 4, 1, 64)]


# Defaults are the project's own (conf/ via the structured-config schema).
from anyq.training.schema import AttentionConfig, BackboneConfig, DataConfig, SamplerConfig  # noqa: E402

ATTENTION, BACKBONE, DATA, SAMPLER = AttentionConfig(), BackboneConfig(), DataConfig(), SamplerConfig()

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--history", type=int, default=168)
    p.add_argument("--horizon", type=int, default=48)
    p.add_argument("--batch", type=int, default=DATA.train_batch_size, help="windows per training step")
    p.add_argument("--quantiles", type=int, default=SAMPLER.num_adaptive_quantiles, help="num_adaptive_quantiles")
    p.add_argument("--blocks", type=int, default=BACKBONE.num_blocks, help="backbone num_blocks")
    p.add_argument("--layers", type=int, default=BACKBONE.num_layers, help="backbone num_layers")
    p.add_argument("--width", type=int, default=BACKBONE.layer_width, help="backbone layer_width")
    p.add_argument("--d-model", type=int, default=ATTENTION.d_model)
    p.add_argument("--n-heads", type=int, default=ATTENTION.n_heads)
    p.add_argument("--attn-blocks", type=int, default=ATTENTION.num_blocks, help="attention num_blocks")
    p.add_argument("--d-ff", type=int, default=ATTENTION.d_ff)
    p.add_argument("--patch", type=int, default=ATTENTION.patch_length, help="attention patch_length")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--eval-windows", type=int, default=512, help="windows of the evaluation pass (0: skip it)")
    p.add_argument("--no-search", action="store_true", help="skip the smaller-attention search")
    p.add_argument("--device", default="cpu", help="torch device of the timed steps (cpu, cuda)")
    p.add_argument("--precision", default="32", choices=sorted(AUTOCAST), help="autocast dtype of the step")
    p.add_argument("--sync-check", action="store_true", help="name the pieces of a step that wait for the device")
    return p.parse_args()


#: ``--precision``: the autocast dtype of the forward pass (None: full precision).
AUTOCAST = {"32": None, "bf16": torch.bfloat16, "16": torch.float16}


def autocast(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    dtype = AUTOCAST[args.precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(args.device).type, dtype=dtype)


def wait(device: str) -> None:
    """Let queued device work finish so that a timer reads the work, not the launch."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def forecaster(args: argparse.Namespace, variant: str, attention: dict) -> torch.nn.Module:
    """The forecaster of ``variant`` at the command line's sizes."""
    sampler_cfg, attention_cfg = variant_config(variant, {"num_adaptive_quantiles": args.quantiles}, attention)
    backbone = {"num_blocks": args.blocks, "num_layers": args.layers, "layer_width": args.width}
    return build_forecaster(args.history, args.horizon, backbone, sampler_cfg, attention_cfg)


def training_setup(args: argparse.Namespace, variant: str, attention: dict):
    """``(model, optimiser, history [B, L], target [B, H])`` of ``variant`` on ``--device``."""
    torch.manual_seed(0)
    model = forecaster(args, variant, {**attention, "dropout": 0.1}).train().to(args.device)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)  # as ForecastingModule
    series = 1000 + 100 * torch.randn(args.batch, args.history + args.horizon, device=args.device)
    return model, optimiser, series[:, : args.history], series[:, args.history :]


def training_step(args: argparse.Namespace, variant: str, attention: dict) -> Callable[[], None]:
    """One training step of ``variant`` (forward, backward, optimiser step, sampler update)."""
    model, optimiser, history, target = training_setup(args, variant, attention)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with autocast(args):
            loss, _, _ = model.training_loss(history, target)
        loss.backward()
        optimiser.step()
        wait(args.device)

    return step


def call_site(exc: BaseException) -> str:
    """``file:line: code`` of the innermost Python frame of ``exc``, and of the innermost frame
    in anyq's own code when that is another."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/anyq/" in f.filename]
    where = [frames[-1]] + ([ours[-1]] if ours and ours[-1] is not frames[-1] else [])
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}: {(f.line or '').strip()}" for f in where)


def host_syncs(args: argparse.Namespace, variant: str, attention: dict) -> dict[str, str]:
    """For each piece of one training step of ``variant`` on a CUDA device, ``""`` if it ran
    without making the host wait, else where the operation that waited was called
    (``torch.cuda.set_sync_debug_mode("error")`` raises there)."""
    model, optimiser, history, target = training_setup(args, variant, attention)
    average = torch.optim.swa_utils.AveragedModel(model, use_buffers=True, multi_avg_fn=warmed_up_ema(0.995))
    levels = evaluation_grid(39).to(args.device)  # the validation grid (EvaluationConfig.val_num_levels)
    scorer = ForecastScorer(levels, num_series=4)
    series_idx = torch.arange(args.batch, device=args.device) % 4
    state: dict[str, torch.Tensor] = {}

    def forward() -> None:
        with autocast(args):
            state["loss"] = model.training_loss(history, target)[0]

    def evaluate() -> None:  # as ForecastingModule.validation_step
        with torch.no_grad(), autocast(args):
            state["forecast"] = model(history, levels.expand(args.batch, -1), raw=True).sort(dim=-1).values

    pieces = {
        "sampler draw": lambda: model.sampler.sample(args.batch),
        "forward + loss + sampler update": forward,
        "backward": lambda: state["loss"].backward(),
        "fused Adam step": optimiser.step,
        "weight average update": lambda: average.update_parameters(model),
        "validation forecast (39 levels)": evaluate,
        "scorer update": lambda: scorer.update(state["forecast"], target, series_idx),
    }
    for piece in pieces.values():  # once outside the check: first calls allocate and copy
        piece()
    optimiser.zero_grad(set_to_none=True)
    wait(args.device)
    found: dict[str, str] = {}
    for name, piece in pieces.items():
        torch.cuda.set_sync_debug_mode("error")
        try:
            piece()
            found[name] = ""
        except RuntimeError as exc:
            found[name] = call_site(exc)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return found


def step_times(steps: dict[str, Callable[[], None]], warmup: int, repeats: int) -> dict[str, tuple[float, float]]:
    """(median, min) seconds per step. Steps are timed round-robin so that load from other
    processes on the machine hits every configuration alike."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def update_times(args: argparse.Namespace) -> tuple[float, float]:
    """Median seconds of the vectorised and of the loop sampler update for one batch."""
    sampler = QuantileSampler(num_adaptive_quantiles=args.quantiles).to(args.device)
    q = sampler.sample(args.batch)
    loss = torch.rand_like(q)

    def update() -> None:
        sampler.update(q, loss)
        wait(args.device)

    fast = median_seconds(update, 200, warmup=20)
    slow = median_seconds(lambda: sampler.update_loop(q, loss), 3, warmup=1)
    return fast, slow


def evaluation_times(args: argparse.Namespace, variant: str, num_levels: int, attention: dict) -> tuple[float, float]:
    """Seconds of one evaluation pass of ``variant`` over ``--eval-windows`` windows at
    ``num_levels`` levels, without gradients: in the model's chunks, and as one call."""
    model = forecaster(args, variant, attention).eval().to(args.device)
    x = torch.randn(args.eval_windows, args.history, device=args.device)
    q = evaluation_grid(num_levels).to(args.device).expand(args.eval_windows, -1)

    def evaluate(chunk_rows: int | None) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), autocast(args):
                model.forward_normalised(x, q, chunk_rows=chunk_rows)
            wait(args.device)
        return run

    chunked = median_seconds(evaluate(EVAL_CHUNK_ROWS), 3, warmup=1)
    whole = median_seconds(evaluate(None), 3, warmup=1)
    return chunked, whole


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    attention = {
        "patch_length": args.patch,
        "d_model": args.d_model,
        "n_heads": args.n_heads,
        "num_blocks": args.attn_blocks,
        "d_ff": args.d_ff,
    }
    where = torch.cuda.get_device_name(args.device) if torch.device(args.device).type == "cuda" else "cpu"
    print(
        f"torch {torch.__version__}, {where}, precision {args.precision}, threads {torch.get_num_threads()}, "
        f"batch {args.batch} windows x {args.quantiles} levels, history {args.history}, horizon {args.horizon}"
    )
    print(
        f"backbone {args.blocks}x{args.layers}x{args.width}; attention d_model {args.d_model}, heads {args.n_heads}, "
        f"blocks {args.attn_blocks}, d_ff {args.d_ff}, patch {args.patch}; median of {args.repeats}\n"
    )
    if args.sync_check and torch.device(args.device).type != "cuda":
        print("--sync-check needs a CUDA device (--device cuda); skipped\n")
    elif args.sync_check:
        print("host syncs inside a training step (torch.cuda.set_sync_debug_mode('error')):")
        for variant in VARIANTS:
            found = host_syncs(args, variant, attention)
            waits = {name: err for name, err in found.items() if err}
            print(f"  {variant:<20}{'none' if not waits else ''}")
            for name, err in waits.items():
                print(f"    {name}: {err}")
        print()
    times = step_times({name: training_step(args, name, attention) for name in VARIANTS}, args.warmup, args.repeats)
    print(f"{'variant':<20}{'median ms':>10}{'min ms':>9}{'windows/s':>11}")
    for name, (median, best) in times.items():
        print(f"{name:<20}{1e3 * median:>10.1f}{1e3 * best:>9.1f}{args.batch / median:>11.0f}")

    full, base = times["adaptive_attention"], times["baseline_adaptive"]
    ratio = full[0] / base[0]
    fast, slow = update_times(args)
    share = fast / full[0]
    print(
        f"\nattention cost: full step / backbone-only step = {ratio:.2f}x by medians, "
        f"{full[1] / base[1]:.2f}x by minima (target <= {ATTENTION_TARGET:.0f}x)"
    )
    print(f"sampler update: {1e3 * fast:.3f} ms = {100 * share:.2f}% of a full step (target < 5%)")
    print(f"loop update:    {1e3 * slow:.1f} ms ({slow / fast:.0f}x the vectorised update)")

    if args.eval_windows:
        print(f"\nevaluation pass, {args.eval_windows} windows, no gradients: chunks of "
              f"{EVAL_CHUNK_ROWS} rows vs one call (target: chunks faster)")
        for variant in ("baseline_adaptive", "adaptive_attention"):
            for levels in (99, 39):
                chunked, whole = evaluation_times(args, variant, levels, attention)
                print(f"  {variant:<20}{levels:>3} levels: {chunked:.2f} s vs {whole:.2f} s ({whole / chunked:.2f}x)")

    if ratio > ATTENTION_TARGET and not args.no_search:
        print("\nattention over target; smaller sizes (d_model, n_heads, num_blocks, d_ff), median ratio:")
        steps = {"baseline": training_step(args, "baseline_adaptive", attention)}
        for d_model, n_heads, blocks, d_ff in CANDIDATES:
            candidate = {**attention, "d_model": d_model, "n_heads": n_heads, "num_blocks": blocks, "d_ff": d_ff}
            steps[f"({d_model}, {n_heads}, {blocks}, {d_ff})"] = training_step(args, "adaptive_attention", candidate)
        found = step_times(steps, args.warmup, args.repeats)
        for name, (median, _) in list(found.items())[1:]:
            r = median / found["baseline"][0]
            print(f"  {name}: {r:.2f}x {'meets' if r <= ATTENTION_TARGET else 'misses'}")

if __name__ == "__main__":
    main()
