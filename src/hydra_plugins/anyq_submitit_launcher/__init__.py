"""Hydra's Submitit launchers with anyq's failure vocabulary (presets anyq_slurm, anyq_submitit_local)."""
