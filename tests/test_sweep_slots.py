"""Where a sweep's trials run: the GPUs cut into disjoint slots of ``--devices-per-trial`` each,
in CUDA order (NVML through the stand-in, tests/support/nvml_standin.py), and the line each
trial's run gets; one gpu-marked test runs a sweep on the real GPUs (``make gpu-check``)."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from support.nvml_standin import GIB, FakeGpu, NvmlSpec

from lightning_magic.sweep.flags import SweepFlags
from lightning_magic.sweep.slots import Slot, slots


def gpus(count: int) -> NvmlSpec:
    return NvmlSpec(gpus=[FakeGpu(name="NVIDIA A100-SXM4-80GB", memory_total=80 * GIB,
                                  uuid=f"GPU-00000000-0000-0000-0000-00000000000{n}")
                          for n in range(count)])


@pytest.fixture
def pci_order(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")


def test_four_gpus_two_per_trial_are_two_disjoint_slots(make_fake_nvml, pci_order):
    make_fake_nvml(gpus(4))
    assert slots(2, None) == [Slot("gpu", "0,1"), Slot("gpu", "2,3")]
    assert slots(2, "gpu") == [Slot("gpu", "0,1"), Slot("gpu", "2,3")]
    assert [s.describe() for s in slots(2, None)] == ["GPU 0, 1", "GPU 2, 3"]


def test_three_gpus_two_per_trial_are_one_slot(make_fake_nvml, pci_order):
    make_fake_nvml(gpus(3))
    assert slots(2, None) == [Slot("gpu", "0,1")]
    assert slots(1, None) == [Slot("gpu", "0"), Slot("gpu", "1"), Slot("gpu", "2")]


def test_hidden_gpus_are_not_slots_and_the_visible_ones_are_numbered_as_cuda_does(
        make_fake_nvml, pci_order, monkeypatch):
    make_fake_nvml(gpus(4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1,2")  # CUDA's 0, 1, 2 are NVML's 3, 1, 2
    assert slots(2, None) == [Slot("gpu", "0,1")]
    assert slots(1, None) == [Slot("gpu", "0"), Slot("gpu", "1"), Slot("gpu", "2")]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    with pytest.raises(UsageError) as raised:
        slots(2, None)
    assert "--devices-per-trial 2" in str(raised.value) and "sees 1 GPU;" in str(raised.value)


def test_more_gpus_per_trial_than_there_are_is_a_usage_error(make_fake_nvml, pci_order):
    make_fake_nvml(gpus(2))
    with pytest.raises(UsageError) as raised:
        slots(3, None)
    message = str(raised.value)
    assert "--devices-per-trial 3: this kernel sees 2 GPUs; ask for at most 2" in message
    assert "--accelerator cpu" in message


def test_accelerator_cpu_ignores_the_gpus(make_fake_nvml, pci_order):
    from lightning_magic.options.values import usable_cores

    make_fake_nvml(gpus(4))
    cut = slots(1, "cpu")
    assert cut == [Slot("cpu", "1", 1)] * max(1, usable_cores())
    assert all(slot.accelerator == "cpu" for slot in slots(2, "cpu"))


def test_each_slots_trial_runs_on_its_own_gpus(make_fake_nvml, pci_order):
    make_fake_nvml(gpus(4))
    flags = SweepFlags(trials=2, metric="val_loss", devices_per_trial=2,
                       train_words=("--max-epochs", "2"))
    first, second = (flags.train_line(s.accelerator, s.devices) for s in slots(2, None))
    assert first.endswith("--accelerator gpu --devices 0,1") and first.startswith("--max-epochs 2")
    assert second.endswith("--accelerator gpu --devices 2,3")


# -- on the real GPUs ----------------------------------------------------------------------------

RECORDS = '''
import os


class WhereItTrains(pl.Callback):
    """Rank 0 writes the CUDA device its model and its current device are on, once."""

    def __init__(self, path):
        self.path = path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.path and trainer.global_rank == 0:
            with open(self.path, "w") as out:
                out.write(f"{pl_module.device.type} {pl_module.device.index} "
                          f"{torch.cuda.current_device()}")
            self.path = None
'''


@pytest.mark.gpu
@pytest.mark.slow
def test_a_sweep_on_gpus_trains_each_trial_on_its_own_gpu(ip, tmp_path, gpu_available):
    pytest.importorskip("optuna")
    from IPython.utils.capture import capture_output
    from support.cells import DEFINITIONS

    assert ip.run_cell(DEFINITIONS).success and ip.run_cell(RECORDS).success
    ip.user_ns["folder"] = str(tmp_path)
    cell = ('model = Regressor(lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True))\n'
            'path = os.path.join(folder, f"trial{trial.number}")\n'
            "trainer = pl.Trainer(callbacks=[WhereItTrains(path)])\n"
            "trainer.fit(model, DataLoader(dataset, batch_size=16), "
            "DataLoader(dataset, batch_size=32))\n")
    with capture_output() as captured:
        result = ip.run_cell("%%lightning_sweep --trials 2 --devices-per-trial 1 "
                             f"--metric val_loss --max-epochs 1\n{cell}")
    assert result.success, (result.error_in_exec, captured.stdout)
    done = result.result
    assert [t.status for t in done.trials] == ["complete", "complete"]
    for record in done.trials:
        assert record.slot.accelerator == "gpu"
        gpu = record.slot.devices
        where = (tmp_path / f"trial{record.number}").read_text().split()
        assert where == ["cuda", gpu, gpu], (record.number, where)
    if len(gpu_available) >= 2:  # room for both at once: each on a GPU of its own
        assert len({record.slot.devices for record in done.trials}) == 2
