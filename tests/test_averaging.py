"""Weight averaging (trainer.ema_decay): the averaged weights are validated, saved and tested."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from anyq.errors import ConfigError
from anyq.training.averaging import AveragedWeights, warmed_up_ema
from anyq.training.builders import build_model, load_dataset
from anyq.training.validation import validate_config
from anyq.training.checkpoints import read_checkpoint
from anyq.training.run import fit_and_test, prepare


def forward_of(cfg, state_dict, plan, levels):
    model = build_model(cfg)
    model.load_state_dict({k.removeprefix("forecaster."): v for k, v in state_dict.items()})
    model.eval()
    batch = next(iter(plan.datamodule.test_dataloader()))
    with torch.no_grad():
        forecast, _ = model.forward_with_raw(batch["history"], levels.expand(batch["history"].shape[0], -1),
                                             batch.get("calendar"), calibrated=False)
    return forecast


def test_the_average_after_three_steps_is_the_warmed_up_formula_by_hand():
    # weights 1, 2, 4 after steps 1..3, decay 0.9: the first update copies (the average is 1);
    # then t = 1 update in the average: d = min(0.9, 2/11) = 2/11 -> 2/11 * 1 + 9/11 * 2 = 20/11;
    # t = 2: d = min(0.9, 3/12) = 1/4 -> 1/4 * 20/11 + 3/4 * 4 = 38/11
    weight = torch.nn.Parameter(torch.tensor([0.0]))
    average = torch.optim.swa_utils.AveragedModel(torch.nn.ParameterList([weight]), multi_avg_fn=warmed_up_ema(0.9))
    seen = []
    for value in (1.0, 2.0, 4.0):
        weight.data.fill_(value)
        average.update_parameters(torch.nn.ParameterList([weight]))
        seen.append(float(next(average.module.parameters())))
    assert seen == pytest.approx([1.0, 20 / 11, 38 / 11], rel=1e-6)
    # without the warm-up (a constant 0.9) the first weights would still weigh 0.81 at step 3
    assert 0.9 * (0.9 * 1 + 0.1 * 2) + 0.1 * 4 == pytest.approx(1.39)


def test_a_group_update_keeps_constant_and_integer_buffers_and_averages_the_rest():
    # one update with d = min(0.9, 2/11) = 2/11 after the first copy: 0 -> 9/11 * 11 = 9
    model = torch.nn.Module()
    model.weight = torch.nn.Parameter(torch.tensor([0.0, 0.0]))
    model.register_buffer("levels", torch.tensor([0.1, 0.7]))  # a constant float buffer
    model.register_buffer("count", torch.tensor([3]))  # an integer buffer
    average = torch.optim.swa_utils.AveragedModel(model, use_buffers=True, multi_avg_fn=warmed_up_ema(0.9))
    average.update_parameters(model)
    with torch.no_grad():
        model.weight.fill_(11.0)
        model.count.fill_(7)
    average.update_parameters(model)
    assert average.module.weight.tolist() == pytest.approx([9.0, 9.0], rel=1e-6)
    assert torch.equal(average.module.levels, torch.tensor([0.1, 0.7]))  # bit for bit
    assert average.module.count.tolist() == [7]  # the trained model's, not averaged


def test_the_optimiser_is_adam_fused_on_the_cpu(compose_cfg):
    cfg = compose_cfg("tracking=none")
    plan = prepare(cfg, load_dataset(cfg.data))
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    plan.module.trainer = trainer
    optimizer = plan.module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] is True
    assert optimizer.defaults["lr"] == cfg.optim.lr and optimizer.defaults["weight_decay"] == cfg.optim.weight_decay


def test_mixed_precision_with_clipped_gradients_trains_with_the_unfused_adam(compose_cfg):
    # Lightning refuses to clip the gradients of an optimiser that unscales them in its own
    # step (fused Adam) under a mixed-precision plugin: the fit would stop at the first step
    cfg = compose_cfg("tracking=none", "trainer.max_epochs=null", "trainer.max_steps=3",
                      "trainer.val_check_interval=3", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0")
    plan = prepare(cfg, load_dataset(cfg.data))
    outcome = fit_and_test(plan)
    assert plan.module.trainer.global_step == 3 and outcome.best_checkpoint
    optimizer = plan.module.trainer.optimizers[0]
    assert optimizer.defaults["fused"] is None
    # without clipping the same precision keeps the fused kernel
    unclipped = pl.Trainer(max_steps=1, precision="bf16-mixed", gradient_clip_val=None, logger=False,
                           enable_checkpointing=False, enable_progress_bar=False)
    plan.module.trainer = unclipped
    assert plan.module.configure_optimizers()["optimizer"].defaults["fused"] is True


def test_the_tested_weights_are_the_average_and_follow_the_ema_formula(compose_cfg):
    decay = 0.5
    cfg = compose_cfg("tracking=none", "trainer.max_epochs=2", f"trainer.ema_decay={decay}")
    plan = prepare(cfg, load_dataset(cfg.data))
    weights: list[dict[str, torch.Tensor]] = []  # the training weights after every optimiser step
    original = plan.module.optimizer_step

    def step_and_keep(*args, **kwargs):
        out = original(*args, **kwargs)
        weights.append({k: v.detach().clone() for k, v in plan.module.forecaster.named_parameters()})
        return out

    plan.module.optimizer_step = step_and_keep
    outcome = fit_and_test(plan)
    checkpoint = read_checkpoint(outcome.best_checkpoint)
    assert "current_model_state" in checkpoint  # Lightning's callback keeps the training weights beside

    # the saved average is the EMA of the training weights of the steps up to the checkpoint's
    steps = int(checkpoint["global_step"])
    name = next(iter(weights[0]))
    expected = weights[0][name]
    for t, w in enumerate(weights[1:steps], start=1):  # t updates already in the average
        d = min(decay, (1 + t) / (10 + t))  # the warm-up (anyq.training.averaging)
        expected = d * expected + (1 - d) * w[name]
    torch.testing.assert_close(checkpoint["state_dict"]["forecaster." + name], expected)

    # the test scored the average, not the training weights saved beside it
    levels = torch.as_tensor(outcome.forecasts["levels"])
    averaged = forward_of(cfg, checkpoint["state_dict"], plan, levels)
    current = forward_of(cfg, checkpoint["current_model_state"], plan, levels)
    stored = torch.as_tensor(outcome.forecasts["forecast"][: averaged.shape[0]])
    torch.testing.assert_close(stored, averaged)
    assert not torch.allclose(stored, current)


@pytest.mark.parametrize("decay", ["0.0", "1.0", "1.5"])
def test_an_impossible_decay_is_one_line(compose_cfg, decay):
    cfg = compose_cfg("tracking=none", f"trainer.ema_decay={decay}")
    with pytest.raises(ConfigError, match=r"trainer.ema_decay=.* must be in \(0, 1\)") as caught:
        validate_config(cfg)
    assert "\n" not in str(caught.value)


def test_a_resumed_fit_continues_from_the_training_weights_and_the_average(compose_cfg):
    first = compose_cfg("tracking=none", "trainer.max_epochs=1", "trainer.ema_decay=0.5")
    fit_and_test(prepare(first, load_dataset(first.data)))
    last = read_checkpoint(f"{first.paths.checkpoints}/last.ckpt")
    resumed = compose_cfg("tracking=none", "trainer.max_epochs=2", "trainer.ema_decay=0.5",
                          f"resume={first.paths.checkpoints}/last.ckpt")
    seen: dict[str, dict[str, torch.Tensor]] = {}

    class Probe(pl.Callback):
        def on_train_start(self, trainer, module):
            seen["module"] = {k: v.clone() for k, v in module.state_dict().items()}
            averaging = next(c for c in trainer.callbacks if isinstance(c, AveragedWeights))
            saved = {"state_dict": module.state_dict()}  # the public hook puts the average in state_dict
            averaging.on_save_checkpoint(trainer, module, saved)
            seen["average"] = {k: v.clone() for k, v in saved["state_dict"].items()}

    fit_and_test(prepare(resumed, load_dataset(resumed.data)), callbacks=[Probe()])
    differs = [k for k in last["state_dict"]
               if not torch.equal(last["state_dict"][k], last["current_model_state"][k])]
    assert differs  # the average and the training weights are not the same weights
    for key in differs:
        torch.testing.assert_close(seen["module"][key], last["current_model_state"][key])  # trains on
        torch.testing.assert_close(seen["average"][key], last["state_dict"][key])  # averages on


def test_averaging_is_part_of_the_baseline_signature_only_when_set(compose_cfg):
    from omegaconf import OmegaConf

    from anyq.tracking.baseline import config_signature

    plain, averaged = compose_cfg("tracking=none"), compose_cfg("tracking=none", "trainer.ema_decay=0.995")
    older = OmegaConf.create(OmegaConf.to_container(plain, resolve=True))  # plain dicts, no schema
    del older.trainer["ema_decay"]  # a run recorded before the key existed
    assert config_signature(plain, "x") == config_signature(older, "x")
    assert config_signature(averaged, "x") != config_signature(plain, "x")


def test_early_stopping_is_part_of_the_baseline_signature_only_when_on(compose_cfg):
    from anyq.tracking.baseline import config_signature

    plain = compose_cfg("tracking=none")
    patient = compose_cfg("tracking=none", "trainer.early_stopping.patience=7")  # off: no effect
    stopping = compose_cfg("tracking=none", "trainer.early_stopping.enabled=true")
    assert config_signature(patient, "x") == config_signature(plain, "x")
    assert config_signature(stopping, "x") != config_signature(plain, "x")
