"""Which cell initialized CUDA in the kernel, and the refusal that names it."""

from __future__ import annotations

import pytest

from lightning_magic.train.kernel.cuda_watch import CudaWatch, cuda_initialized, guess


@pytest.mark.parametrize("source, reason", [
    ("x = torch.zeros(3).cuda()", "a .cuda() call"),
    ("torch.cuda.synchronize()", "a torch.cuda.* call"),
    ("model.to('cuda')", "a .to('cuda') call"),
    ("t = torch.ones(2, device='cuda')", "a tensor created with device='cuda'"),
    ("dev = torch.device('cuda:0')", "torch.device('cuda')"),
])
def test_guess_points_at_the_line(source, reason):
    culprit = guess(f"import torch\n{source}\n", set(), 7)
    assert (culprit.cell, culprit.reason, culprit.source_line) == (7, reason, source)


def test_guess_names_imports_known_to_initialize_cuda():
    culprit = guess("import bitsandbytes as bnb", {"bitsandbytes", "bitsandbytes.nn"}, 2)
    assert culprit.reason == "importing bitsandbytes" and culprit.source_line is None


def test_is_initialized_check_does_not_count_as_a_culprit():
    culprit = guess("print(torch.cuda.is_initialized())", set(), 1)
    assert culprit.reason.startswith("code in that cell")


def test_hooks_are_installed_by_load_ext_and_record_nothing_without_cuda(ip):
    watches = [cb.__self__ for cb in ip.events.callbacks["post_run_cell"]
               if isinstance(getattr(cb, "__self__", None), CudaWatch)]
    assert len(watches) == 1
    assert ip.run_cell("import torch\ny = torch.ones(2) * 2").success
    assert not cuda_initialized()
    assert watches[0].culprit is None


@pytest.mark.gpu
def test_training_after_a_cuda_cell_is_refused_naming_that_cell(ip, gpu_available):
    from IPython.core.error import UsageError

    result = ip.run_cell("import torch\nwarm = torch.zeros(1).cuda()")
    assert result.success and cuda_initialized()
    cell = result.execution_count
    with pytest.raises(UsageError) as info:
        ip.run_cell_magic("lightning_train", "--devices 1",
                          "import lightning.pytorch as pl\nx = 1")
    message = str(info.value)
    assert f"cell [{cell}]" in message and ".cuda()" in message and "Restart the kernel" in message


def test_the_load_ext_cell_is_not_blamed_for_modules_already_loaded(ip):
    from IPython.core.interactiveshell import ExecutionResult

    watch = CudaWatch(ip)
    watch.register()
    try:
        # the %load_ext cell ends without a pre_run_cell of its own
        watch.post_run_cell(ExecutionResult(None))
        assert watch.culprit is None and watch._modules_before
        assert not watch.initialized_by_current_cell()
    finally:
        watch.unregister()
