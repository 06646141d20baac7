"""--devices / --accelerator / --precision / --strategy resolution, and every rejection; idle
GPUs (--devices free) on a machine another user shares; the precision and DataLoader notes; and
whether this torch can use the GPUs NVML sees."""

from __future__ import annotations

import os

import pytest
import torch
from IPython.core.error import UsageError
from support.nvml_standin import GIB, another_users_process  # noqa: F401 - a fixture

from lightning_magic import readings
from lightning_magic.options.hardware import (
    Gpu,
    check_torch_can_use_gpus,
    detect_gpus,
    resolve,
    torch_gpu_problem,
    worker_note,
)

A100 = Gpu(0, "NVIDIA A100-SXM4-80GB", 80 * 2**30, (8, 0))
A100_B = Gpu(1, "NVIDIA A100-SXM4-80GB", 80 * 2**30, (8, 0))
T4 = Gpu(0, "Tesla T4", 16 * 2**30, (7, 5))
TWO = [A100, A100_B]


def r(devices="auto", accelerator="auto", strategy="auto", precision="32-true", gpus=(), why=""):
    return resolve(devices, accelerator, strategy, precision, list(gpus), why)


def test_auto_without_gpu_is_one_cpu_process():
    resolved = r()
    assert (resolved.accelerator, resolved.devices, resolved.num_processes) == ("cpu", 1, 1)
    assert resolved.strategy == "single_device"
    assert resolved.notes == ()


def test_none_means_the_flag_was_not_given():
    given = resolve(None, None, None, None, [], "")
    assert (given.accelerator, given.devices, given.strategy, given.precision) == (
        "cpu", 1, "single_device", "32-true")
    assert resolve(None, None, None, None, TWO, "").trainer_devices() == [0, 1]


def test_auto_with_gpus_takes_every_gpu_with_ddp_note():
    resolved = r(gpus=TWO)
    assert (resolved.accelerator, resolved.devices, resolved.num_processes) == ("gpu", (0, 1), 2)
    assert resolved.strategy == "ddp_notebook"
    assert "No strategy was given, so the 2 GPU processes train with DDP (ddp_notebook)." in \
        resolved.notes
    assert not any("No strategy" in n for n in r(gpus=TWO, strategy="ddp_notebook").notes)


def test_single_gpu_run_is_a_single_device_strategy():
    resolved = r(devices="1", gpus=TWO)
    assert resolved.devices == (0,) and resolved.strategy == "single_device"
    assert not any("DDP" in n for n in resolved.notes)


def test_cpu_spec_and_cpu_accelerator_counts():
    assert r(devices="cpu", gpus=TWO).accelerator == "cpu"
    resolved = r(devices="3", accelerator="cpu", gpus=TWO)
    assert (resolved.accelerator, resolved.devices, resolved.num_processes) == ("cpu", 3, 3)
    assert any("train with DDP (ddp_notebook)" in n for n in resolved.notes)


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
    assert "GPU 0: NVIDIA A100-SXM4-80GB, 80 GiB" in message and "GPU 1: NVIDIA A100" in message


@pytest.mark.parametrize("spec, accelerator, gpus, words", [
    ("gpu:0", "auto", [], ["GPU 0", "NVML sees no NVIDIA GPU", "driver missing", "--accelerator cpu"]),
    ("auto", "gpu", [], ["--accelerator gpu", "no NVIDIA GPU"]),
    ("3", "gpu", TWO, ["3 GPUs", "this kernel can use 2"]),
    ("gpu:0", "cpu", TWO, ["--accelerator is cpu"]),
    ("gpu:0", "auto", TWO, []),  # valid: GPU 0 alone
    ("0", "auto", TWO, ["selects nothing", "gpu:0"]),
    ("0", "cpu", TWO, ["selects nothing: give a number of CPU processes of at least 1"]),
    ("0", "auto", [], ["selects nothing: give a number of CPU processes of at least 1"]),
    ("", "auto", TWO, ["selects nothing"]),
    ("gpu:", "auto", TWO, ["'gpu:'"]),
    ("0,0", "auto", TWO, ["twice"]),
    ("x", "auto", TWO, ["'x' is not a GPU number"]),
    ("free:0", "auto", TWO, ["free:2"]),
    ("free:x", "auto", TWO, ["free:2"]),
    ("free", "cpu", TWO, ["--accelerator is cpu"]),
    ("free", "auto", [], ["idle GPUs", "no NVIDIA GPU"]),
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


@pytest.mark.parametrize("strategy", ["ddp_spawn", "deepspeed", "deepspeed_stage_3", "dp",
                                      "fsdp_cpu_offload"])
def test_script_only_strategies_are_refused_with_the_reason(strategy):
    with pytest.raises(UsageError) as info:
        r(strategy=strategy)
    message = str(info.value)
    assert f"--strategy {strategy!r}" in message
    assert "ddp_notebook" in message and "--export" in message


def test_unknown_strategy_lists_what_is_allowed():
    with pytest.raises(UsageError) as info:
        r(strategy="magic")
    assert "not a strategy a notebook can use" in str(info.value)
    assert "single_device, fsdp, model_parallel" in str(info.value)


@pytest.mark.parametrize("strategy, devices, expected, note", [
    ("auto", "2", "ddp_notebook", None),
    ("auto", "1", "single_device", None),
    ("ddp", "1", "ddp_notebook", "re-run the program as a script"),
    ("ddp", "2", "ddp_notebook", "re-run the program as a script"),
    ("ddp_notebook", "1", "ddp_notebook", None),
    ("ddp_fork", "2", "ddp_notebook", "forks its ranks"),
    ("ddp_find_unused_parameters_true", "2", "ddp_notebook_find_unused_parameters_true",
     "as a script"),
    ("ddp_fork_find_unused_parameters_true", "2", "ddp_notebook_find_unused_parameters_true",
     "forks its ranks"),
    ("ddp_notebook_find_unused_parameters_true", "2", "ddp_notebook_find_unused_parameters_true",
     None),
    ("single_device", "1", "single_device", None),
    ("model_parallel", "2", "model_parallel", None),
    ("MODEL_PARALLEL", "2", "model_parallel", None),
])
def test_notebook_strategies(strategy, devices, expected, note):
    resolved = r(devices=devices, accelerator="cpu", strategy=strategy)
    assert resolved.strategy == expected
    if note:
        assert any(note in n and expected in n for n in resolved.notes), resolved.notes
    else:
        assert not any("--strategy" in n for n in resolved.notes)


def test_fsdp_needs_gpus():
    assert r(devices="2", strategy="fsdp", gpus=TWO).strategy == "fsdp"
    with pytest.raises(UsageError) as info:
        r(devices="2", accelerator="cpu", strategy="fsdp")
    assert "Lightning's FSDP needs a GPU" in str(info.value)
    assert "--strategy model_parallel" in str(info.value)


def test_single_device_is_one_process():
    with pytest.raises(UsageError) as info:
        r(devices="2", accelerator="cpu", strategy="single_device")
    assert "--devices 1" in str(info.value) and "ddp_notebook" in str(info.value)


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


@pytest.mark.parametrize("precision, gpus, words", [
    (None, TWO, ["float32", "the default", "--precision bf16-mixed"]),
    ("32-true", TWO, ["float32", "--precision bf16-mixed"]),
    (None, [T4], ["float16 tensor cores but no bfloat16", "--precision 16-mixed"]),
    ("16-mixed", TWO, ["bf16-mixed is recommended", "Ampere"]),
])
def test_precision_recommendations_are_notes_and_change_nothing(precision, gpus, words):
    resolved = resolve("auto", "auto", "auto", precision, gpus, "")
    assert resolved.precision == (precision or "32-true")
    note = " ".join(resolved.notes)
    for word in words:
        assert word in note, (word, resolved.notes)


def test_no_precision_note_where_there_is_nothing_to_recommend():
    assert not any("precision" in n for n in r(precision="bf16-mixed", gpus=TWO).notes)
    assert r(precision="32-true").notes == ()  # on the CPU
    assert r(precision="16-mixed", gpus=[T4]).notes == ()


def test_worker_note_counts_the_cpus_of_each_rank():
    note = worker_note(8, 2, 4)
    assert "num_workers=8" in note and "each of the 2 ranks" in note
    assert "2 each rank has (4 CPUs here" in note and "num_workers=1 is enough" in note
    assert worker_note(1, 2, 8) is None
    assert worker_note(0, 4, 2) is None
    assert "the rank" in worker_note(4, 1, 2)
    # more ranks than CPUs: no rank has a CPU to spare, and the note does not say it has one
    crowded = worker_note(4, 4, 2)
    assert "with 4 ranks on 2 CPUs each rank has no CPU of its own" in crowded
    assert "num_workers=0" in crowded and "the 1 each rank has" not in crowded
    assert "each rank has one CPU, for its training loop" in worker_note(2, 2, 2)


# -- NVML through the stand-in: detection, idle GPUs ---------------------------------------------


@pytest.fixture
def pci_order(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def test_detect_gpus_reads_nvml(fake_nvml, pci_order):
    gpus, reason = detect_gpus()
    assert [(g.index, g.name) for g in gpus] == [(0, "NVIDIA A100-SXM4-80GB"),
                                                 (1, "NVIDIA GeForce RTX 3090")]
    assert gpus[1].compute_capability == (8, 6)
    assert gpus[0].memory_total == 80 * 2**30
    assert gpus[0].uuid == "GPU-0a4c1b56-7d2e-4f51-9b0e-000000000000"
    assert reason == "" and gpus.notes == ()


def test_cuda_numbers_gpus_fastest_first_unless_told(fake_nvml, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    gpus, _ = detect_gpus()
    assert [g.index for g in gpus] == [1, 0]
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in gpus.notes[0]
    assert "GPU 0 = NVML 1, NVIDIA GeForce RTX 3090" in gpus.notes[0]


def test_detect_gpus_without_nvml(nvml_missing):
    gpus, reason = detect_gpus()
    assert gpus == [] and "No NVIDIA driver found" in reason


def test_a_gpu_refusal_is_about_training_not_the_readings(ip, nvml_missing):
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("lightning_train", "--accelerator gpu", "ran = True")
    message = str(info.value)
    assert "No NVIDIA driver found" in message and "--accelerator cpu" in message
    assert "readings" not in message
    assert "CPU and memory readings still work." in readings.nvml_status()["reason"]


def test_devices_free_skips_a_gpu_another_user_computes_on(fake_nvml, pci_order,
                                                           another_users_process):
    fake_nvml.gpus[0].memory_used = 2 * GIB
    fake_nvml.gpus[0].processes = [(another_users_process, 2 * GIB)]
    fake_nvml.gpus[1].memory_used = GIB // 4
    gpus, reason = detect_gpus()

    resolved = resolve("free", None, None, None, gpus, reason)

    assert resolved.trainer_devices() == [1] and resolved.nvml_indices == (1,)
    note = " ".join(resolved.notes)
    assert "--devices free: GPU 1: NVIDIA GeForce RTX 3090;" in note
    assert "skipped GPU 0: NVIDIA A100-SXM4-80GB (1 compute process of other users (nobody))" \
        in note
    with pytest.raises(UsageError) as info:
        resolve("free:2", None, None, None, gpus, reason)
    assert "1 of the 2 GPUs this kernel can use is idle" in str(info.value)
    assert "busy: GPU 0: NVIDIA A100-SXM4-80GB (1 compute process of other users (nobody))" \
        in str(info.value)

    warned = resolve(None, None, None, None, gpus, reason)
    assert warned.trainer_devices() == [0, 1]
    assert any("GPU 0: NVIDIA A100-SXM4-80GB is busy" in n and "--devices free" in n
               for n in warned.notes), warned.notes


def test_devices_free_skips_a_gpu_with_its_memory_in_use(fake_nvml, pci_order):
    fake_nvml.gpus[0].memory_used = 30 * GIB  # one's own process, say
    fake_nvml.gpus[1].memory_used = 0
    gpus, reason = detect_gpus()

    resolved = resolve("free:1", None, None, None, gpus, reason)

    assert resolved.nvml_indices == (1,)
    assert "skipped GPU 0: NVIDIA A100-SXM4-80GB (30.0 of 80 GiB in use)" in resolved.notes[0]


def test_a_graphics_process_does_not_make_a_gpu_busy(fake_nvml, pci_order):
    fake_nvml.gpus[0].memory_used = 0
    fake_nvml.gpus[0].graphics_processes = [(1, 100 * 2**20)]  # the display server
    fake_nvml.gpus[1].memory_used = 0
    gpus, reason = detect_gpus()
    assert resolve("free", None, None, None, gpus, reason).trainer_devices() == [0, 1]


# -- whether torch can use the GPUs ------------------------------------------------------------


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch is a CUDA build")
def test_a_cpu_build_of_torch_is_refused_with_what_to_install(fake_nvml, pci_order):
    gpus, reason = detect_gpus()
    assert resolve("1", None, None, None, gpus, reason).accelerator == "gpu"

    with pytest.raises(UsageError) as info:
        check_torch_can_use_gpus()

    message = str(info.value)
    assert f"torch {torch.__version__} is a CPU-only build" in message
    assert "driver runs CUDA 12.4" in message
    assert "pip install torch --index-url https://download.pytorch.org/whl/cu124" in message
    assert "\n" not in message
    assert not torch.cuda.is_initialized()


def test_hiding_every_gpu_is_refused(monkeypatch, fake_nvml):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(UsageError, match="CUDA_VISIBLE_DEVICES is '' in this kernel"):
        check_torch_can_use_gpus()


@pytest.mark.parametrize("torch_cuda, driver, words", [
    ("12.8", "11.8", ["built for CUDA 12.8, newer than this driver runs", "whl/cu118",
                      "update the NVIDIA driver"]),
    (None, "12.2", ["CPU-only build", "whl/cu121"]),
    (None, None, ["CPU-only build", "a torch build for this driver's CUDA"]),
])
def test_what_torch_cannot_use(torch_cuda, driver, words):
    problem = torch_gpu_problem("2.5.1", torch_cuda, driver, None)
    for word in words:
        assert word in problem, (word, problem)


@pytest.mark.parametrize("torch_cuda, driver", [("12.4", "12.4"), ("12.6", "12.2"),
                                                ("11.8", "12.4")])
def test_what_torch_can_use(torch_cuda, driver):
    assert torch_gpu_problem("2.5.1", torch_cuda, driver, "0") is None


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
