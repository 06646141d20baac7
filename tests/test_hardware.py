"""--devices / --accelerator / --precision / --strategy resolution, and every rejection."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from lightning_magic.hardware import Gpu, detect_gpus, resolve

A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", 80 * 2**30, (8, 0))
A100_B = Gpu(1, "NVIDIA A100-SXM4-80GB", 80 * 2**30, (8, 0))
T4 = Gpu(0, "Tesla T4", 16 * 2**30, (7, 5))
TWO = [A100, A100_B]


def r(devices="auto", accelerator="auto", strategy="auto", precision="32-true", gpus=(), why=""):
    return resolve(devices, accelerator, strategy, precision, list(gpus), why)


def test_auto_without_gpu_is_one_cpu_process():
    resolved = r()
    assert (resolved.accelerator, resolved.devices, resolved.num_processes) == ("cpu", 1, 1)
    assert resolved.strategy == "ddp_notebook"
    assert resolved.notes == ()


def test_auto_with_gpus_takes_every_gpu_with_ddp_note():
    resolved = r(gpus=TWO)
    assert (resolved.accelerator, resolved.devices, resolved.num_processes) == ("gpu", (0, 1), 2)
    assert resolved.strategy == "ddp_notebook"
    assert any("Multi-GPU (DDP) will be used automatically" in n for n in resolved.notes)


def test_single_gpu_run_is_forked_too():
    resolved = r(devices="1", gpus=TWO)
    assert resolved.devices == (0,) and resolved.strategy == "ddp_notebook"
    assert not any("DDP" in n for n in resolved.notes)


def test_cpu_spec_and_cpu_accelerator_counts():
    assert r(devices="cpu", gpus=TWO).accelerator == "cpu"
    resolved = r(devices="3", accelerator="cpu", gpus=TWO)
    assert (resolved.accelerator, resolved.devices, resolved.num_processes) == ("cpu", 3, 3)
    assert any("(DDP)" in n for n in resolved.notes)


def test_count_without_gpu_means_cpu_processes_with_a_note():
    resolved = r(devices="2")
    assert (resolved.accelerator, resolved.num_processes) == ("cpu", 2)
    assert any("No GPU visible to NVML" in n for n in resolved.notes)


@pytest.mark.parametrize("spec", ["0,1", "gpu:0,gpu:1", "cuda:0,cuda:1", " 0, 1 "])
def test_gpu_lists(spec):
    resolved = r(devices=spec, gpus=TWO)
    assert resolved.devices == (0, 1) and resolved.accelerator == "gpu"


def test_cpu_entry_dropped_when_gpus_selected():
    resolved = r(devices="cpu,gpu:1", gpus=TWO)
    assert resolved.devices == (1,)
    assert "CPU is ignored when GPUs are selected." in resolved.notes


def test_minus_one_is_every_gpu():
    assert r(devices="-1", gpus=TWO).devices == (0, 1)


def test_missing_gpu_index_lists_the_gpus_there_are():
    with pytest.raises(UsageError) as info:
        r(devices="0,3", gpus=TWO)
    message = str(info.value)
    assert "no GPU 3" in message
    assert "0: NVIDIA A100-SXM4-80GB, 80 GiB" in message and "1: NVIDIA A100" in message


@pytest.mark.parametrize("spec, accelerator, gpus, words", [
    ("gpu:0", "auto", [], ["GPU 0", "NVML sees no NVIDIA GPU", "driver missing", "--accelerator cpu"]),
    ("auto", "gpu", [], ["--accelerator gpu", "no NVIDIA GPU"]),
    ("3", "gpu", TWO, ["3 GPUs", "there are 2"]),
    ("gpu:0", "cpu", TWO, ["--accelerator is cpu"]),
    ("gpu:0", "auto", TWO, []),  # valid: GPU 0 alone
    ("0", "auto", TWO, ["selects nothing", "gpu:0"]),
    ("", "auto", TWO, ["selects nothing"]),
    ("gpu:", "auto", TWO, ["'gpu:'"]),
    ("0,0", "auto", TWO, ["twice"]),
    ("x", "auto", TWO, ["'x' is not a GPU index"]),
    ("-2", "auto", TWO, ["selects nothing"]),
    ("-1", "cpu", [], ["every GPU"]),
    ("cpu", "gpu", TWO, ["contradicts"]),
])
def test_device_rejections(spec, accelerator, gpus, words):
    if not words:
        assert r(devices=spec, accelerator=accelerator, gpus=gpus).devices == (0,)
        return
    with pytest.raises(UsageError) as info:
        r(devices=spec, accelerator=accelerator, gpus=gpus, why="driver missing")
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn", "fsdp", "deepspeed",
                                      "deepspeed_stage_3", "dp"])
def test_script_only_strategies_are_refused_with_the_reason(strategy):
    with pytest.raises(UsageError) as info:
        r(strategy=strategy)
    message = str(info.value)
    assert f"--strategy {strategy!r}" in message
    assert "ddp_notebook" in message
    assert "notebook" in message


def test_unknown_strategy():
    with pytest.raises(UsageError, match="not a strategy a notebook can use"):
        r(strategy="magic")


@pytest.mark.parametrize("strategy, expected", [
    ("ddp_notebook", "ddp_notebook"), ("ddp_fork", "ddp_notebook"),
    ("ddp_notebook_find_unused_parameters_true", "ddp_notebook_find_unused_parameters_true"),
])
def test_notebook_strategies(strategy, expected):
    assert r(strategy=strategy).strategy == expected


def test_fp16_on_cpu_suggests_bf16():
    with pytest.raises(UsageError) as info:
        r(precision="16-mixed")
    assert "--precision 16-mixed" in str(info.value) and "bf16-mixed" in str(info.value)


def test_bf16_on_gpu_without_it_suggests_16_mixed():
    with pytest.raises(UsageError) as info:
        r(precision="bf16-mixed", gpus=[T4])
    message = str(info.value)
    assert "Tesla T4" in message and "7.5" in message and "16-mixed" in message


def test_bf16_where_supported():
    assert r(precision="bf16-mixed", gpus=TWO).precision == "bf16-mixed"
    assert r(precision="bf16-mixed").precision == "bf16-mixed"  # CPU supports bf16


def test_detect_gpus_reads_nvml(fake_nvml):
    gpus, reason = detect_gpus()
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA A100-SXM4-80GB"),
                                                 (1, "NVIDIA GeForce RTX 3090")]
    assert gpus[1].compute_capability == (8, 6)
    assert gpus[0].memory_total == 80 * 2**30
    assert reason == ""


def test_detect_gpus_without_nvml(nvml_missing):
    gpus, reason = detect_gpus()
    assert gpus == [] and reason


def test_magic_rejects_a_missing_gpu_before_the_cell_runs(ip, fake_nvml):
    ip.user_ns.pop("ran", None)
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("lightning_train", "--devices 0,5", "ran = True")
    assert "no GPU 5" in str(info.value) and "NVIDIA GeForce RTX 3090, 24 GiB" in str(info.value)
    assert "ran" not in ip.user_ns


def test_magic_rejects_bad_flag_before_the_cell_runs(ip):
    with pytest.raises(UsageError):
        ip.run_cell_magic("lightning_train", "--max-epochs x", "ran = True")
    assert "ran" not in ip.user_ns


def test_bad_flag_in_a_cell_is_one_line_and_nothing_runs(ip, capsys):
    result = ip.run_cell("%%lightning_train --precision 17\nran = True")
    assert isinstance(result.error_in_exec, UsageError)
    assert "ran" not in ip.user_ns
    err = capsys.readouterr()
    text = err.out + err.err
    assert "Traceback" not in text and "--precision '17'" in text
