"""CUDA_VISIBLE_DEVICES and CUDA_DEVICE_ORDER against NVML: every form (numbers, GPU- and MIG-
UUIDs and their prefixes, empty, an entry that ends the list), the readings' ``cuda_index``,
and what the Trainer receives (CUDA device numbers) for the GPUs a SLURM job was given."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from support.nvml_standin import GIB, FakeGpu, FakeMig, NvmlSpec

from lightning_magic.options import hardware
from lightning_magic import readings
from lightning_magic.readings.environment import visible_devices


def node(count: int = 8, name: str = "NVIDIA H100 80GB HBM3") -> NvmlSpec:
    return NvmlSpec(gpus=[
        FakeGpu(name=name, uuid=f"GPU-{n}{n}{n}{n}aaaa-0000-0000-0000-00000000000{n}",
                memory_total=80 * GIB, memory_used=GIB // 2, compute_capability=(9, 0))
        for n in range(count)])


def uuid(n: int) -> str:
    return f"GPU-{n}{n}{n}{n}aaaa-0000-0000-0000-00000000000{n}"


@pytest.fixture(autouse=True)
def fresh_readings(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    readings.shutdown()
    yield
    readings.shutdown()


def cuda_map(environ: dict, gpus=None) -> list[tuple[int, int, int | None]]:
    gpus = gpus if gpus is not None else [
        {"index": n, "uuid": uuid(n), "compute_capability": [9, 0],
         "pci_bus_id": f"0000:{n:02X}:00.0", "mig": {"enabled": None, "instances": []}}
        for n in range(4)]
    found = visible_devices(gpus, environ)
    return [(d.cuda_index, d.nvml_index, d.mig_slot) for d in found.devices]


@pytest.mark.parametrize("value, expected", [
    (None, [(0, 0, None), (1, 1, None), (2, 2, None), (3, 3, None)]),
    ("2,3", [(0, 2, None), (1, 3, None)]),
    ("3,1", [(0, 3, None), (1, 1, None)]),
    (" 2 , 0 ", [(0, 2, None), (1, 0, None)]),
    ("", []),
    ("NoDevFiles", []),
    ("-1", []),
    ("1,7,2", [(0, 1, None)]),          # CUDA ends the list at the first entry naming nothing
    ("1,1", [(0, 1, None)]),            # ... or one named twice
    (uuid(2), [(0, 2, None)]),
    (uuid(2).upper(), [(0, 2, None)]),
    ("GPU-2222", [(0, 2, None)]),        # a unique prefix
    ("GPU-", []),                        # a prefix of every GPU names none of them
    (f"{uuid(3)},1", [(0, 3, None), (1, 1, None)]),
])
def test_every_form_of_cuda_visible_devices(value, expected):
    environ = {} if value is None else {"CUDA_VISIBLE_DEVICES": value}
    assert cuda_map(environ) == expected


def test_an_entry_that_ends_the_list_is_noted():
    found = visible_devices([{"index": 0, "uuid": uuid(0), "mig": {}}],
                            {"CUDA_VISIBLE_DEVICES": "0,5"})
    assert [d.nvml_index for d in found.devices] == [0]
    assert found.restricted and "'5' names no GPU NVML sees" in found.notes[0]


def test_device_order_pci_bus_or_fastest_first():
    gpus = [{"index": 0, "uuid": uuid(0), "compute_capability": [7, 5], "pci_bus_id": "0:01",
             "mig": {}},
            {"index": 1, "uuid": uuid(1), "compute_capability": [8, 9], "pci_bus_id": "0:02",
             "mig": {}}]
    assert cuda_map({}, gpus) == [(0, 1, None), (1, 0, None)]  # CUDA's default: fastest first
    assert cuda_map({"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, gpus) == [(0, 0, None), (1, 1, None)]
    assert cuda_map({"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "1"}, gpus) == [
        (0, 1, None)]
    assert cuda_map({"CUDA_VISIBLE_DEVICES": "1"}, gpus) == [(0, 0, None)]


def test_mig_instances_by_uuid_and_their_parent():
    gpus = [{"index": 0, "uuid": uuid(0), "mig": {"enabled": True, "instances": [
                {"index": 0, "uuid": "MIG-aaaa1111"}, {"index": 3, "uuid": "MIG-bbbb2222"}]}},
            {"index": 1, "uuid": uuid(1), "mig": {"enabled": None, "instances": []}}]
    assert cuda_map({}, gpus) == [(0, 0, 0), (1, 0, 3), (2, 1, None)]
    assert cuda_map({"CUDA_VISIBLE_DEVICES": "MIG-bbbb2222"}, gpus) == [(0, 0, 3)]
    assert cuda_map({"CUDA_VISIBLE_DEVICES": "MIG-bbbb"}, gpus) == [(0, 0, 3)]
    assert cuda_map({"CUDA_VISIBLE_DEVICES": uuid(0)}, gpus) == [(0, 0, 0)]


# -- through NVML (the stand-in) and the magic's resolution -----------------------------------


def test_readings_mark_the_gpus_this_process_can_use(make_fake_nvml, monkeypatch):
    make_fake_nvml(node())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")

    gpus = readings.snapshot()["gpus"]

    assert [g["cuda_index"] for g in gpus] == [None, None, 0, 1, None, None, None, None]


def test_a_slurm_job_given_gpus_2_and_3_trains_on_cuda_0_and_1(make_fake_nvml, monkeypatch):
    make_fake_nvml(node())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv("SLURM_JOB_ID", "77")

    gpus, reason = hardware.detect_gpus()
    resolved = hardware.resolve(None, None, None, None, gpus, reason)

    assert resolved.trainer_devices() == [0, 1]
    assert resolved.nvml_indices == (2, 3)
    assert resolved.notes[0].startswith("Environment: SLURM job 77")
    assert any("CUDA_VISIBLE_DEVICES='2,3': this kernel may use 2 devices of the 8 GPUs" in n
               and "GPU 0 = NVML 2, NVIDIA H100" in n for n in resolved.notes), resolved.notes
    assert "2 GPUs [0 = NVML 2, 1 = NVML 3]" in resolved.describe()


def test_devices_speak_cuda_numbering(make_fake_nvml, monkeypatch):
    make_fake_nvml(node())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    gpus, reason = hardware.detect_gpus()

    assert hardware.resolve("1", None, None, None, gpus, reason).nvml_indices == (2,)
    assert hardware.resolve("gpu:1", None, None, None, gpus, reason).nvml_indices == (3,)
    with pytest.raises(UsageError) as info:
        hardware.resolve("2,3", None, None, None, gpus, reason)
    message = str(info.value)
    assert "there is no GPU 2, 3 for this kernel" in message
    assert "CUDA numbers only the GPUs CUDA_VISIBLE_DEVICES lets it see" in message
    assert "GPU 0 = NVML 2, NVIDIA H100 80GB HBM3, 80 GiB; GPU 1 = NVML 3" in message


def test_a_uuid_pins_the_kernel_to_one_gpu(make_fake_nvml, monkeypatch):
    make_fake_nvml(node())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", uuid(5))
    gpus, reason = hardware.detect_gpus()

    resolved = hardware.resolve("gpu:0", None, None, None, gpus, reason)

    assert resolved.trainer_devices() == [0] and resolved.nvml_indices == (5,)
    assert resolved.strategy == "single_device"


def test_an_empty_value_hides_every_gpu(make_fake_nvml, monkeypatch):
    make_fake_nvml(node(2))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    gpus, reason = hardware.detect_gpus()

    assert list(gpus) == [] and "hides all 2" in reason
    assert hardware.resolve(None, None, None, None, gpus, reason).accelerator == "cpu"
    with pytest.raises(UsageError) as info:
        hardware.resolve("gpu:0", None, None, None, gpus, reason)
    assert "CUDA_VISIBLE_DEVICES='' hides all 2 GPUs NVML sees" in str(info.value)


def test_a_mig_slice_is_one_device_with_its_memory(make_fake_nvml, monkeypatch):
    parent = FakeGpu(name="NVIDIA A100-SXM4-80GB", uuid="GPU-parent", memory_total=80 * GIB,
                     mig=[FakeMig("MIG-one", 20 * GIB, 1 * GIB), FakeMig("MIG-two", 40 * GIB)])
    make_fake_nvml(NvmlSpec(gpus=[parent]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-two")
    gpus, reason = hardware.detect_gpus()

    resolved = hardware.resolve(None, None, None, None, gpus, reason)

    assert resolved.trainer_devices() == [0]
    assert (resolved.gpus[0].mig_slot, resolved.gpus[0].memory_total) == (1, 40 * GIB)
    assert "GPU 0 = MIG 1 of NVML 0, NVIDIA A100-SXM4-80GB, 40 GiB" in " ".join(resolved.notes)


def test_several_mig_slices_train_on_one(make_fake_nvml):
    parent = FakeGpu(name="NVIDIA A100-SXM4-80GB", uuid="GPU-parent", memory_total=80 * GIB,
                     mig=[FakeMig("MIG-one", 20 * GIB), FakeMig("MIG-two", 40 * GIB)])
    make_fake_nvml(NvmlSpec(gpus=[parent]))
    gpus, reason = hardware.detect_gpus()

    resolved = hardware.resolve(None, None, None, None, gpus, reason)

    assert resolved.trainer_devices() == [0]
    assert any("one MIG instance" in n for n in resolved.notes)
    with pytest.raises(UsageError, match="a process can use one MIG instance"):
        hardware.resolve("0,1", None, None, None, gpus, reason)


# -- a real GPU --------------------------------------------------------------------------------

TRAIN_ON_THE_GPU = '''
import os

import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(32, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        assert x.device.type == "cuda" and torch.cuda.device_count() == 1
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        self.log("device_uuid_matches", float(
            str(torch.cuda.get_device_properties(0).uuid) in os.environ["CUDA_VISIBLE_DEVICES"]))
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


X = torch.randn(512, 32)
model = Net()
train_loader = DataLoader(TensorDataset(X, X[:, :1]), batch_size=64)
'''


@pytest.mark.gpu
@pytest.mark.slow
def test_pinned_by_uuid_gpu_0_trains_on_that_gpu(ip, gpu_available, monkeypatch):
    from IPython.utils.capture import capture_output

    target = gpu_available[-1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", target["uuid"])
    readings.shutdown()

    with capture_output() as captured:
        result = ip.run_cell(f"%%lightning_train --devices gpu:0 --max-epochs 1\n"
                             f"{TRAIN_ON_THE_GPU}")

    assert result.success, captured.stdout + str(result.error_in_exec)
    run = result.result
    assert run.status == "finished" and run.accelerator == "gpu" and run.devices == [0]
    assert run.metrics["device_uuid_matches"] == 1.0
