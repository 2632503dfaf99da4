"""A run's record describes what ran: resumed runs, baseline reuse, checkpoint names, task=test.

Each test drives the real job (``run_job``) on the tiny synthetic config and reads the
MLflow store back.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, OverrideParseException
from mlflow.tracking import MlflowClient

from anyq.app.job import run_job
from anyq.app.train import run_job as validated_job
from anyq.errors import CheckpointError, ConfigError
from anyq.training.builders import load_dataset
from anyq.training.checkpoints import override
from conftest import TINY, compose_config, run_cli

NO_BASELINE = ("tracking.compare_to_baseline=false", "tracking.log_model=false")


def client_at(root: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")


def artifact_text(client: MlflowClient, run_id: str, path: str, tmp: Path) -> str:
    return Path(client.download_artifacts(run_id, path, str(tmp))).read_text()


def checkpoints(root: Path) -> set[Path]:
    return set(root.rglob("*.ckpt"))


# --------------------------------------------------------------- kind D: resumed runs
def test_resume_with_more_epochs_records_the_change_and_keeps_history(compose_cfg, tmp_path):
    first = compose_cfg(*NO_BASELINE, "trainer.max_epochs=1")
    summary = run_job(first)
    run_id = summary["run_id"]
    last = Path(first.paths.checkpoints) / "last.ckpt"
    client = client_at(tmp_path)
    epoch0 = client.get_metric_history(run_id, "val/crps")[0].value

    again = run_job(compose_cfg(*NO_BASELINE, "trainer.max_epochs=3", f"resume={last}"))
    assert again["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params, tags = run.data.params, run.data.tags
    assert params["trainer.max_epochs"] == "1"  # what the first segment ran with
    assert params["resume1.trainer.max_epochs"] == "3"  # what the resumed segment ran with
    assert "trainer.max_epochs: 1 -> 3" in tags["resume1.changes"]
    assert tags["resumes"] == "1" and tags["resumed"] == "true"
    assert "trainer.max_epochs=1" in tags["overrides"] and "trainer.max_epochs=3" in tags["resume1.overrides"]
    assert "max_epochs: 1\n" in artifact_text(client, run_id, "config.yaml", tmp_path / "a")
    assert "max_epochs: 3\n" in artifact_text(client, run_id, "resume1/config.yaml", tmp_path / "b")

    history = json.loads(artifact_text(client, run_id, "evaluation/val_history.json", tmp_path / "c"))
    assert len(history) == 3  # epoch 0 from the first segment, epochs 1-2 resumed
    assert history[0]["val/crps"] == pytest.approx(epoch0)
    mlflow_crps = [m.value for m in sorted(client.get_metric_history(run_id, "val/crps"), key=lambda m: m.step)]
    np.testing.assert_allclose([h["val/crps"] for h in history], mlflow_crps, rtol=1e-6)
    importance = np.load(client.download_artifacts(run_id, "evaluation/sampler_importance.npz", str(tmp_path / "d")))
    assert importance["probabilities"].shape[0] == 3

    # a second resume is segment 2, compared with what segment 1 ran with
    resumed_last = tmp_path / "outputs" / "job1" / "checkpoints" / "last.ckpt"
    run_job(compose_cfg(*NO_BASELINE, "trainer.max_epochs=4", "optim.lr=0.001", f"resume={resumed_last}"))
    tags = client.get_run(run_id).data.tags
    assert tags["resumes"] == "2"
    assert "trainer.max_epochs: 3 -> 4" in tags["resume2.changes"] and "optim.lr: 0.0005 -> 0.001" in tags["resume2.changes"]
    assert len(client.get_metric_history(run_id, "val/crps")) == 4


def test_checkpoint_of_another_model_is_refused_before_the_run_is_touched(compose_cfg, tmp_path, capsys):
    first = compose_cfg(*NO_BASELINE, "trainer.max_epochs=1")
    run_id = run_job(first)["run_id"]
    last = Path(first.paths.checkpoints) / "last.ckpt"
    changed = compose_cfg(*NO_BASELINE, "model.backbone.layer_width=48", f"resume={last}")
    with pytest.raises(CheckpointError) as info:
        run_job(changed)
    message = str(info.value)
    assert "\n" not in message and "does not fit the configured model" in message
    assert "model.backbone.layer_width=32 (now 48)" in message
    run = client_at(tmp_path).get_run(run_id)
    assert run.info.status == "FINISHED" and "resumes" not in run.data.tags

    # the same through the command: one line, exit 2
    with pytest.raises(SystemExit) as exited:
        run_cli(tmp_path, *TINY, *NO_BASELINE, "model.backbone.layer_width=48", f"resume={last}")
    assert exited.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("anyq-train: error:")]
    assert len(errors) == 1 and "does not fit the configured model" in errors[0]


def test_resume_on_other_data_and_unreadable_checkpoints_are_refused(compose_cfg, tmp_path):
    first = compose_cfg(*NO_BASELINE, "trainer.max_epochs=1")
    run_job(first)
    last = Path(first.paths.checkpoints) / "last.ckpt"
    with pytest.raises(CheckpointError, match=r"was trained on other data \(fingerprint [0-9a-f]{16}"):
        run_job(compose_cfg(*NO_BASELINE, "data.synthetic.seed=7", f"resume={last}"))
    with pytest.raises(CheckpointError, match=r"other\.ckpt: .*window|does not fit .*data\.history_length=168 \(now 144\)"):
        shutil.copy(last, tmp_path / "other.ckpt")
        run_job(compose_cfg(*NO_BASELINE, "data.history_length=144", f"resume={tmp_path / 'other.ckpt'}"))
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.ckpt is not a readable anyq-train checkpoint"):
        run_job(compose_cfg(*NO_BASELINE, f"resume={junk}"))
    with pytest.raises(FileNotFoundError, match=r"resume checkpoint not found: .*missing\.ckpt"):
        run_job(compose_cfg(*NO_BASELINE, f"resume={tmp_path / 'missing.ckpt'}"))


# ------------------------------------------------------ kind D: baseline on the same data
def write_csv(cfg, path: Path, factor: float = 1.0) -> Path:
    frame = load_dataset(cfg.data).panel.to_long()
    frame.assign(y=frame["y"] * factor).to_csv(path, index=False)
    return path


def test_baseline_reuse_needs_the_same_data_content(compose_cfg, tmp_path, caplog):
    path = write_csv(compose_cfg(), tmp_path / "load.csv")
    data = ("data=csv", f"data.path={path}", "data.split.proportions=[0.667,0.1665,0.1665]", "tracking.log_model=false")
    old_baseline = run_job(compose_cfg(*data, "model=baseline_adaptive"))["run_id"]
    write_csv(compose_cfg(), path, factor=10.0)  # corrected in place: same name, other values
    caplog.set_level(logging.INFO, logger="anyq.tracking.baseline_comparison")
    model = run_job(compose_cfg(*data, "model=nbeats_aq"))
    client = client_at(tmp_path)
    run = client.get_run(model["run_id"])
    new_baseline = run.data.tags["baseline_run_id"]
    assert new_baseline != old_baseline
    assert f"Reusing baseline run {old_baseline}" not in caplog.text
    baseline = client.get_run(new_baseline)
    assert baseline.data.tags["data_fingerprint"] == run.data.tags["data_fingerprint"]
    assert client.get_run(old_baseline).data.tags["data_fingerprint"] != run.data.tags["data_fingerprint"]
    assert run.data.metrics["delta/crps_ratio_vs_baseline"] == pytest.approx(
        run.data.metrics["test/crps"] / baseline.data.metrics["test/crps"])
    assert run.data.metrics["delta/crps_ratio_vs_baseline"] < 5.0  # not the 10x of the old file

    # the same corrected file again: that baseline is reused, not retrained
    caplog.clear()
    third = run_job(compose_cfg(*data, "model=nbeats_aq", "seed=0", "tracking.run_name=again"))
    assert client.get_run(third["run_id"]).data.tags["baseline_run_id"] == new_baseline
    assert f"Reusing baseline run {new_baseline}" in caplog.text


# ------------------------------------------ kind E: printed paths paste into overrides
def printed_checkpoints(text: str) -> list[tuple[str, str]]:
    return re.findall(r"best checkpoint: (\S+)  \(score it: anyq-train .*?task=test (\S+)\)", text)


def test_printed_checkpoint_paths_paste_into_resume(compose_cfg, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="anyq.app.job")
    cfg = compose_cfg(*NO_BASELINE, "trainer.max_epochs=1")
    run_job(cfg)
    names = sorted(p.name for p in Path(cfg.paths.checkpoints).glob("*.ckpt"))
    assert names == ["best-epoch00.ckpt", "last.ckpt"]
    (printed,) = printed_checkpoints(caplog.text)
    path, argument = printed
    assert Path(path).is_file() and "=" not in Path(path).name
    assert argument == f"resume={path}"  # nothing to quote: pasted as it is
    for text in (argument, f"resume={path}"):
        assert compose_config(tmp_path, [text], job="paste").resume == path


@pytest.mark.parametrize("name", ["best-epoch=00.ckpt", "run 1/last.ckpt", "a,b.ckpt", "it's.ckpt",
                                  'q"x.ckpt', "(x)[y]{z}.ckpt", "c:\\\\w\\best.ckpt", "$HOME.ckpt", "end\\\\"])
def test_override_quotes_any_path_hydra_would_split(tmp_path, name):
    path = str(tmp_path / name)
    parsed = OverridesParser.create().parse_overrides([override("resume", path)])[0]
    assert parsed.key_or_group == "resume" and parsed.value() == path
    assert compose_config(tmp_path, [override("resume", path)], job="quoted").resume == path


def test_old_checkpoint_name_with_equals_sign_works_quoted(compose_cfg, tmp_path):
    cfg = compose_cfg(*NO_BASELINE, "trainer.max_epochs=1")
    trained = run_job(cfg)
    old = Path(cfg.paths.checkpoints) / "best-epoch=00.ckpt"
    shutil.copy(Path(cfg.paths.checkpoints) / "best-epoch00.ckpt", old)
    with pytest.raises(OverrideParseException, match="mismatched input '='"):
        compose_config(tmp_path, [f"resume={old}"], job="bare")  # Hydra's own parser refuses it
    quoted = compose_cfg(*NO_BASELINE, "task=test", override("resume", old))
    assert quoted.resume == str(old)
    assert run_job(quoted)["test/crps"] == pytest.approx(trained["test/crps"], rel=1e-6)  # the same weights scored


# --------------------------------------------------------- kind F: task=test, task=tset
def test_task_test_scores_the_checkpoint_and_trains_nothing(compose_cfg, tmp_path):
    first = compose_cfg(*NO_BASELINE)
    trained = run_job(first)
    client = client_at(tmp_path)
    before = client.get_run(trained["run_id"])
    (best,) = Path(first.paths.checkpoints).glob("best-*.ckpt")
    files = checkpoints(tmp_path)
    content = best.read_bytes()

    scored = run_job(compose_cfg(*NO_BASELINE, "task=test", f"resume={best}"))
    assert checkpoints(tmp_path) == files  # no checkpoint written
    assert scored["run_id"] != trained["run_id"]  # a run of its own; the trained run untouched
    after = client.get_run(trained["run_id"])
    assert after.info.end_time == before.info.end_time and after.data.tags == before.data.tags
    assert len(client.get_metric_history(trained["run_id"], "val/crps")) == first.trainer.max_epochs
    run = client.get_run(scored["run_id"])
    assert run.data.tags["task"] == "test" and run.data.tags["scored_run_id"] == trained["run_id"]
    assert run.data.tags["scored_checkpoint"] == str(best)
    assert "train/loss" not in run.data.metrics and "train_seconds" not in run.data.metrics
    assert not client.get_metric_history(scored["run_id"], "val/crps")  # no validation epoch ran
    # the same weights on the same test windows: the trained run's own test scores
    assert run.data.metrics["test/crps"] == pytest.approx(before.data.metrics["test/crps"], rel=1e-6)
    assert best.read_bytes() == content  # the checkpoint itself is not rewritten
    history = json.loads(artifact_text(client, scored["run_id"], "evaluation/val_history.json", tmp_path / "h"))
    # the scored checkpoint's own record: the trained run's epochs up to the best one
    epoch = int(re.search(r"best-epoch(\d+)\.ckpt", best.name).group(1))
    full = json.loads(artifact_text(client, trained["run_id"], "evaluation/val_history.json", tmp_path / "t"))
    assert history == full[: epoch + 1]


def test_task_test_untracked_and_misuses(compose_cfg, tmp_path, caplog):
    first = compose_cfg("tracking=none")
    trained = run_job(first)
    (best,) = Path(first.paths.checkpoints).glob("best-*.ckpt")
    files = checkpoints(tmp_path)
    caplog.set_level(logging.WARNING, logger="anyq.training.run")
    scored = run_job(compose_cfg("tracking=none", "task=test", f"resume={best}"))
    assert scored["test/crps"] == pytest.approx(trained["test/crps"], rel=1e-6)
    assert "on other data" not in caplog.text
    assert checkpoints(tmp_path) == files
    with pytest.raises(ConfigCompositionException) as info:
        compose_cfg("task=tset")
    assert "tset" in str(info.value) or "tset" in str(info.value.__cause__)
    with pytest.raises(ConfigError, match="task=test scores a checkpoint: add resume="):
        validated_job(compose_cfg("tracking=none", "task=test"))
    with pytest.raises(CheckpointError, match="does not fit the configured model"):
        run_job(compose_cfg("tracking=none", "task=test", "model=nbeats_aq", f"resume={best}"))
    # scoring on other data is allowed (only training on needs the same data), and said
    other_cfg = compose_cfg("tracking=none", "task=test", "data.synthetic.seed=3", f"resume={best}")
    other = run_job(other_cfg)
    assert other["test/crps"] != pytest.approx(trained["test/crps"], rel=1e-6)
    fingerprints = [load_dataset(c.data).fingerprint for c in (other_cfg, first)]
    assert f"scoring {best} on other data than it was trained on (data fingerprint {fingerprints[0]}; " \
           f"it was trained on {fingerprints[1]})" in caplog.text


def test_data_path_with_equals_sign_pastes_quoted(tmp_path):
    folder = tmp_path / "site=north, 2021"
    folder.mkdir()
    path = folder / "load.csv"
    path.write_text("unique_id,ds,y\na,2021-01-01 00:00,1\n")
    cfg = compose_config(tmp_path, ["data=csv", override("data.path", path)], job="data")
    assert cfg.data.path == str(path)
    from anyq.data import read_long_frame

    assert read_long_frame(cfg.data.path)["y"].tolist() == [1.0]


def test_a_scoring_run_is_never_taken_for_a_baseline(compose_cfg, tmp_path):
    cfg = compose_cfg("model=baseline_adaptive", "tracking.log_model=false")
    trained = run_job(cfg)
    (best,) = Path(cfg.paths.checkpoints).glob("best-*.ckpt")
    scored = run_job(compose_cfg("model=baseline_adaptive", "tracking.log_model=false", "task=test", f"resume={best}"))
    client = client_at(tmp_path)
    from anyq.tracking.baseline import SIGNATURE_TAG, find_baseline_run

    tags = client.get_run(scored["run_id"]).data.tags
    assert tags[SIGNATURE_TAG] == client.get_run(trained["run_id"]).data.tags[SIGNATURE_TAG]
    found = find_baseline_run(client, tags[SIGNATURE_TAG], tags["data_fingerprint"])
    assert found is not None and found.info.run_id == trained["run_id"]  # the newer scoring run is skipped


def test_a_run_records_whether_it_is_trained_enough_and_a_resume_can_clear_it(compose_cfg, tmp_path):
    from anyq.tracking.recording import log_outcome
    from anyq.tracking.runs import RunRecord
    from anyq.training.run import TrainOutcome

    cfg = compose_cfg("model=adaptive_attention")
    client = MlflowClient(f"sqlite:///{tmp_path}/records.db")
    run_id = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "artifacts").as_uri())).info.run_id
    record = RunRecord(client, run_id)

    def outcome(coverage: float) -> TrainOutcome:
        return TrainOutcome(metrics={"test/crps": 1.0, "test/coverage-0.9": coverage}, curves={}, forecasts={},
                            val_history=[], importance_history=np.zeros((0, 0)), best_checkpoint=None,
                            train_seconds=0.0)

    log_outcome(record, cfg, outcome(0.0))
    tags = client.get_run(run_id).data.tags
    assert tags["trained_enough"] == "false"
    assert tags["trained_enough_reason"] == "test/coverage-0.9 0.000 outside [0.5, 0.99]"
    log_outcome(record, cfg, outcome(0.9))  # the same run, resumed and trained on
    tags = client.get_run(run_id).data.tags
    assert tags["trained_enough"] == "true" and "trained_enough_reason" not in tags
