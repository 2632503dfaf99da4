"""The cost a sweep prints before its first trial: jobs x budget x a measured step time."""

from __future__ import annotations

from omegaconf import OmegaConf

from anyq.sweeping.cost import STARTUP_S, SweepCost, budget_of


def trainer(**kw):
    base = dict(max_epochs=None, max_steps=300, val_check_interval=100, accumulate_grad_batches=1)
    return OmegaConf.create({"trainer": {**base, **kw}})


def test_budget_in_steps_or_epochs():
    assert budget_of(trainer(), batches_per_epoch=128) == (300, 3)
    assert budget_of(trainer(max_epochs=2, max_steps=-1), batches_per_epoch=12) == (24, 2)
    assert budget_of(trainer(max_epochs=2, max_steps=10), batches_per_epoch=12) == (10, 2)  # whichever first
    assert budget_of(trainer(max_epochs=2, max_steps=-1, accumulate_grad_batches=4), batches_per_epoch=12) == (6, 2)


def test_estimate_adds_the_baseline_and_spreads_jobs_over_slots():
    cost = SweepCost(trials=8, slots=2, steps=300, checks=3, step_s=0.2, validation_s=5.0, test_s=20.0,
                     threads=1, batch=256)
    job = 300 * 0.2 + 3 * 5.0 + 20.0 + STARTUP_S
    assert cost.jobs == 9 and cost.job_s == job
    assert cost.wall_s == 5 * job  # 9 jobs on 2 slots: 5 rounds
    first, second, third = cost.lines()
    assert first == (f"Cost estimate: 9 jobs (8 trials + 1 baseline), {job / 60:.1f} min a job, 2 side by side: "
                     f"about {5 * job / 60:.0f} min wall at most (pruning stops trials early)")
    assert second == f"  a job: 300 steps x 0.2 s + 3 validations x 5 s + test 20 s + start-up {STARTUP_S:.0f} s"
    assert "measured now: median of 3 optimiser steps of the base config (batch 256, 1 torch thread)" in third
    one_slot = SweepCost(trials=8, slots=1, steps=300, checks=3, step_s=0.2, validation_s=5.0, test_s=20.0,
                         threads=2, batch=256)
    assert one_slot.wall_s == 9 * job and "2 torch threads" in one_slot.lines()[2]


def test_a_baseline_the_store_holds_is_not_priced_again():
    cost = SweepCost(trials=3, slots=2, steps=300, checks=3, step_s=0.2, validation_s=5.0, test_s=20.0,
                     threads=1, batch=256, baseline=0)
    assert cost.jobs == 3 and cost.wall_s == 2 * cost.job_s  # 3 jobs on 2 slots: 2 rounds
    assert cost.lines()[0].startswith("Cost estimate: 3 jobs (3 trials; their baseline is in the store), ")
    one = SweepCost(trials=1, slots=1, steps=8, checks=1, step_s=0.01, validation_s=0.1, test_s=0.2,
                    threads=1, batch=64, baseline=0)
    assert one.lines()[0] == (f"Cost estimate: 1 job (1 trial; their baseline is in the store), {one.job_s / 60:.1f} "
                              f"min a job, 1 side by side: under 1 min wall at most (pruning stops trials early)")
    assert one.lines()[1].startswith("  a job: 8 steps x 0.01 s + 1 validation x 0.1 s + ")
