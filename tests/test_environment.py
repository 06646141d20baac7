"""Where the kernel runs, told by its environment: a Lightning studio, Google Colab, Kaggle, a
SLURM allocation or a plain machine; the checkpoint root on each one's persistent storage (the
same for the kernel and the server); the CPUs a rank has; and the note a run starts with."""

from __future__ import annotations

import os

import pytest
from support.nvml_standin import GIB, FakeGpu, NvmlSpec

from lightning_magic.options import hardware
from lightning_magic import readings
from lightning_magic.readings import environment
from lightning_magic.readings.environment import (
    checkpoint_root,
    cpus_available,
    describe_environment,
)

STUDIO = {"LIGHTNING_CLOUD_SPACE_ID": "01hspace", "LIGHTNING_CLOUD_PROJECT_ID": "p"}
COLAB = {"COLAB_RELEASE_TAG": "release-colab_20240501", "COLAB_GPU": "1"}
KAGGLE = {"KAGGLE_KERNEL_RUN_TYPE": "Interactive", "KAGGLE_URL_BASE": "https://www.kaggle.com"}
SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURMD_NODENAME": "node07",
         "SLURM_JOB_PARTITION": "gpu", "SLURM_NTASKS": "2", "SLURM_GPUS_PER_TASK": "a100:2",
         "SLURM_CPUS_PER_TASK": "8"}


@pytest.fixture
def storage(tmp_path, monkeypatch):
    """Each environment's persistent storage, as a folder of this test (absent until made)."""
    paths = {name: tmp_path / name for name in ("studio", "drive", "kaggle")}
    monkeypatch.setattr(environment, "STUDIO_ROOT", str(paths["studio"]))
    monkeypatch.setattr(environment, "COLAB_DRIVE", str(paths["drive"]))
    monkeypatch.setattr(environment, "KAGGLE_WORKING", str(paths["kaggle"]))
    return paths


@pytest.mark.parametrize("variables, kind, label", [
    ({}, "local", "this machine"),
    (STUDIO, "studio", "Lightning studio"),
    (COLAB, "colab", "Google Colab"),
    (KAGGLE, "kaggle", "Kaggle notebook"),
    (SLURM, "slurm", "SLURM job 4242 on node07"),
    ({**SLURM, **COLAB}, "colab", "Google Colab"),
])
def test_each_environment_by_its_variables(storage, variables, kind, label):
    described = describe_environment(variables)
    assert (described["kind"], described["label"]) == (kind, label)


def test_slurm_details_per_task(storage):
    details = describe_environment(SLURM)["details"]
    assert details == {"job_id": "4242", "job_name": "train", "partition": "gpu",
                       "node": "node07", "tasks": 2, "gpus_per_task": 2, "cpus_per_task": 8,
                       "persistent_storage": None}
    on_node = describe_environment({"SLURM_JOB_ID": "1", "SLURM_GPUS_ON_NODE": "4",
                                    "SLURM_NTASKS_PER_NODE": "2"})["details"]
    assert on_node["gpus_per_task"] == 2 and on_node["cpus_per_task"] is None


def test_cuda_variables_are_part_of_the_description(storage):
    details = describe_environment({"CUDA_VISIBLE_DEVICES": "2,3",
                                    "CUDA_DEVICE_ORDER": "PCI_BUS_ID"})["details"]
    assert details == {"cuda_visible_devices": "2,3", "cuda_device_order": "PCI_BUS_ID"}


@pytest.mark.parametrize("variables, folder", [
    (STUDIO, "studio"), (COLAB, "drive"), (KAGGLE, "kaggle")])
def test_checkpoints_go_to_persistent_storage(storage, tmp_path, variables, folder):
    assert checkpoint_root(tmp_path / "work", variables) == tmp_path / "work" / "lightning_runs"
    storage[folder].mkdir()

    assert checkpoint_root(tmp_path / "work", variables) == storage[folder] / "lightning_runs"
    assert describe_environment(variables)["details"]["persistent_storage"] == str(
        storage[folder])


def test_a_read_only_storage_is_not_used(storage, tmp_path):
    storage["kaggle"].mkdir()
    storage["kaggle"].chmod(0o500)
    try:
        if os.access(storage["kaggle"], os.W_OK):
            pytest.skip("this user (root) can write to a read-only folder")
        assert checkpoint_root(tmp_path, KAGGLE) == tmp_path / "lightning_runs"
    finally:
        storage["kaggle"].chmod(0o700)


def test_the_readings_report_the_disk_runs_write_to(storage, monkeypatch):
    storage["studio"].mkdir()
    monkeypatch.setenv("LIGHTNING_CLOUD_SPACE_ID", "01hspace")

    assert readings.Sampler(3600).disk_path == storage["studio"] / "lightning_runs"
    assert readings.snapshot()["disk"]["path"] == str(storage["studio"] / "lightning_runs")


def test_cpus_per_rank(monkeypatch):
    mine = len(os.sched_getaffinity(0))
    assert cpus_available({}) == mine
    assert cpus_available({"SLURM_JOB_ID": "1", "SLURM_CPUS_PER_TASK": "1"}) == 1
    assert cpus_available({"SLURM_CPUS_PER_TASK": "1"}) == mine  # not in a job: ignored


def test_a_run_starts_with_where_it_runs(make_fake_nvml, monkeypatch, storage):
    make_fake_nvml(NvmlSpec(gpus=[FakeGpu(name="Tesla V100-SXM2-32GB", uuid="GPU-v100",
                                          memory_total=32 * GIB, compute_capability=(7, 0))]))
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    gpus, reason = hardware.detect_gpus()

    resolved = hardware.resolve(None, None, None, None, gpus, reason)

    assert resolved.notes[0] == ("Environment: SLURM job 4242 on node07; 2 GPUs per task and "
                                 "8 CPUs per task.")
    assert any("--precision 16-mixed" in n for n in resolved.notes)
    assert resolved.precision == "32-true"


def test_a_local_run_has_no_environment_note(fake_nvml, monkeypatch, storage):
    for name in (*STUDIO, *COLAB, *KAGGLE, *SLURM):
        monkeypatch.delenv(name, raising=False)
    gpus, reason = hardware.detect_gpus()
    assert not any(n.startswith("Environment") for n in
                   hardware.resolve(None, None, None, None, gpus, reason).notes)
