"""How often the verdict says "better" or "worse" when the variant is no different: the test of
``anyq.reporting.verdict`` against a two-stage bootstrap (seeds with replacement, then circular
blocks of origins, percentile p-value), on simulated per-seed, per-origin CRPS.

Both groups draw from the same law: a level that varies by day, a day difficulty shared by
both groups (AR(1), rho 0.5), a day-by-day advantage of the candidate with mean 0 (the test
windows' own noise), a constant effect per seed, and a seed × day interaction (AR(1)). Three
mixes of those spreads (relative sizes):

    .venv/bin/python benchmarks/bench_verdict.py                  # 3 and 5 seeds, 100 origins, 300 draws
    .venv/bin/python benchmarks/bench_verdict.py --seeds 3 --origins 365 --draws 1000

The printed shares are the rejection rates at alpha 0.05 (0.05 is right; above it the test
finds differences that are not there).
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from anyq.reporting.verdict import seed_window_test

MIXES = {  # (seed effect, window effect, seed x window interaction), relative sd
    "seeds dominate": (0.05, 0.01, 0.01),
    "windows dominate": (0.005, 0.05, 0.01),
    "mixed": (0.03, 0.03, 0.02),
}


def ar1(rng: np.random.Generator, n: int, rho: float, sd: float) -> np.ndarray:
    e = rng.normal(0.0, sd, n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1.0 - rho ** 2)
    for i in range(1, n):
        x[i] = rho * x[i - 1] + e[i]
    return x


def two_stage_bootstrap_p(c: np.ndarray, r: np.ndarray, rng: np.random.Generator, replicates: int = 1000,
                          overlap: int = 1) -> float:
    """Paired seeds with replacement, then circular blocks of max(overlap + 1, T^(1/3)) origins."""
    seeds, n = c.shape
    length = max(overlap + 1, round(n ** (1 / 3)))
    starts = rng.integers(0, n, size=(replicates, math.ceil(n / length), 1))
    index = ((starts + np.arange(length)) % n).reshape(replicates, -1)[:, :n]
    origin_counts = np.zeros((replicates, n))
    np.add.at(origin_counts, (np.arange(replicates)[:, None], index), 1.0)
    draws = rng.integers(0, seeds, size=(replicates, seeds))
    seed_counts = np.zeros((replicates, seeds))
    np.add.at(seed_counts, (np.arange(replicates)[:, None], draws), 1.0)
    thetas = (np.einsum("bt,bs,st->b", origin_counts, seed_counts, c)
              / np.einsum("bt,bs,st->b", origin_counts, seed_counts, r) - 1.0)
    below, above = (thetas <= 0).sum(), (thetas >= 0).sum()
    return min(1.0, 2.0 * (1 + min(below, above)) / (replicates + 1))


def simulate(rng: np.random.Generator, seeds: int, origins: int, mix: tuple[float, float, float]):
    seed_sd, window_sd, inter_sd = mix
    level = 100.0 * (1.0 + 0.3 * np.sin(np.arange(origins) / 7.0))
    shared = ar1(rng, origins, 0.5, window_sd)
    advantage = ar1(rng, origins, 0.5, window_sd)
    r = np.stack([level * (1 + shared + rng.normal(0, seed_sd) + ar1(rng, origins, 0.5, inter_sd))
                  for _ in range(seeds)])
    c = np.stack([level * (1 + shared + 0.5 * advantage + rng.normal(0, seed_sd) + ar1(rng, origins, 0.5, inter_sd))
                  for _ in range(seeds)])
    return c, r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--origins", type=int, default=100)
    parser.add_argument("--draws", type=int, default=300)
    parser.add_argument("--alpha", type=float, default=0.05)
    args = parser.parse_args()
    print(f"rejection rate under no difference, alpha {args.alpha}, {args.origins} origins, {args.draws} draws")
    print(f"{'seeds':>5}  {'mix':<17} {'seed x window test':>18} {'two-stage bootstrap':>19}")
    for seeds in args.seeds:
        for name, mix in MIXES.items():
            rng = np.random.default_rng(1)
            test = boot = 0
            for _ in range(args.draws):
                c, r = simulate(rng, seeds, args.origins, mix)
                test += seed_window_test(c, r, paired=True, overlap=1).p_value < args.alpha
                boot += two_stage_bootstrap_p(c, r, rng) < args.alpha
            print(f"{seeds:>5}  {name:<17} {test / args.draws:>18.3f} {boot / args.draws:>19.3f}", flush=True)


if __name__ == "__main__":
    main()
