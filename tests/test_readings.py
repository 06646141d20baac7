"""Readings of the machine: NVML through the stand-in at the pynvml boundary (two GPUs, fields a
device does not report, a GPU failing mid-sample, no library), psutil for real, real processes
for the GPU process labels, and real NVML where there is a GPU (``gpu`` marker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from importlib.resources import files

import jsonschema
import psutil
import pytest
from support.nvml_standin import GIB, FakeGpu, FakeMig, NvmlSpec

from lightning_magic import readings
from lightning_magic.readings.nvml import MIG_UTILIZATION
from lightning_magic.readings.processes import KERNEL_ID_VAR, RANK_VAR, RUN_ID_VAR

SCHEMA = json.loads(files("lightning_magic").joinpath("schema/gpu-status.schema.json").read_text())


def assert_valid(reading: dict) -> None:
    """A reading is the endpoint's body without ``runs``."""
    jsonschema.Draft202012Validator(SCHEMA).validate({**reading, "runs": []})


DYNAMIC_FIELDS = [
    ("utilization", "gpu"), ("utilization", "memory"), ("memory", "used"), ("temperature",),
    ("power", "draw"), ("clocks", "sm"), ("clocks", "memory"), ("fan",), ("performance_state",),
    ("ecc_errors", "corrected"), ("ecc_errors", "uncorrected"),
]


def field(gpu: dict, path: tuple):
    value = gpu
    for key in path:
        value = value[key]
    return value


@pytest.fixture(autouse=True)
def fresh_readings():
    readings.shutdown()
    yield
    readings.shutdown()


# -- psutil on this machine, no NVML -----------------------------------------------------------


def test_without_nvml_library_cpu_and_memory_are_still_read(nvml_missing):
    reading = readings.snapshot()

    assert_valid(reading)
    assert reading["nvml"]["available"] is False
    assert "No NVIDIA driver found" in reading["nvml"]["reason"]
    assert reading["gpus"] == []
    assert reading["cpu"]["count"] == psutil.cpu_count() == len(reading["cpu"]["per_core"])
    shares = [reading["cpu"]["percent"], *reading["cpu"]["per_core"]]
    assert all(0 <= share <= 100 for share in shares)
    assert reading["memory"]["total"] == psutil.virtual_memory().total
    assert 0 < reading["memory"]["used"] <= reading["memory"]["total"]
    assert readings.list_gpus() == []
    assert readings.nvml_status() == reading["nvml"]


@pytest.mark.parametrize("error, words", [
    ("DRIVER_NOT_LOADED", "driver is installed but not loaded"),
    ("NO_PERMISSION", "cannot open /dev/nvidia"),
    ("LIB_RM_VERSION_MISMATCH", "Reboot"),
    ("UNKNOWN", "NVML could not start"),
])
def test_nvml_start_failures_are_explained(make_fake_nvml, error, words):
    make_fake_nvml(NvmlSpec(init_error=error))

    status = readings.nvml_status()

    assert status["available"] is False
    assert words in status["reason"]


def test_this_machine_reading_matches_the_schema():
    reading = readings.snapshot()

    assert_valid(reading)
    assert reading["nvml"]["available"] is bool(reading["nvml"]["reason"] is None)


def test_disk_is_that_of_the_checkpoint_root_even_before_it_exists(tmp_path):
    root = tmp_path / "lightning_runs" / "not-yet"

    disk = readings.snapshot(disk_path=root)["disk"]

    assert disk["path"] == str(root)
    assert disk["total"] == psutil.disk_usage(str(tmp_path)).total


def test_the_default_checkpoint_root_is_lightning_runs_in_the_working_directory(tmp_path,
                                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)

    assert readings.snapshot()["disk"]["path"] == str(tmp_path / "lightning_runs")


# -- NVML through the stand-in ----------------------------------------------------------------


def test_two_gpus_every_field_and_unsupported_ones_null(fake_nvml, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    reading = readings.snapshot()

    assert_valid(reading)
    assert reading["nvml"] == {"available": True, "driver_version": "550.54.15",
                               "cuda_driver_version": "12.4", "reason": None}
    a100, rtx = reading["gpus"]
    assert a100 == {
        "index": 0, "uuid": "GPU-0a4c1b56-7d2e-4f51-9b0e-000000000000",
        "name": "NVIDIA A100-SXM4-80GB", "compute_capability": [8, 0],
        "pci_bus_id": "00000000:01:00.0", "cuda_index": 0,
        "utilization": {"gpu": 87, "memory": 41, "reason": None},
        "memory": {"used": 30 * GIB, "total": 80 * GIB},
        "temperature": 64, "power": {"draw": 287.5, "limit": 400.0},
        "clocks": {"sm": 1410, "memory": 1593}, "fan": 35, "performance_state": "P0",
        "ecc_errors": {"corrected": 2, "uncorrected": 0},
        "mig": {"enabled": None, "instances": []}, "processes": [], "error": None,
    }
    assert rtx["utilization"] == {"gpu": 3, "memory": 1, "reason": None}
    assert rtx["cuda_index"] == 1
    assert rtx["performance_state"] == "P8"
    assert rtx["power"] == {"draw": None, "limit": None}
    assert rtx["fan"] is None
    assert rtx["ecc_errors"] == {"corrected": None, "uncorrected": None}
    assert rtx["error"] is None, "a field the device does not report is not an error"


def test_inventory_for_device_resolution(fake_nvml):
    assert readings.list_gpus() == [
        {"index": 0, "uuid": "GPU-0a4c1b56-7d2e-4f51-9b0e-000000000000",
         "name": "NVIDIA A100-SXM4-80GB", "memory_total": 80 * GIB, "compute_capability": [8, 0],
         "pci_bus_id": "00000000:01:00.0"},
        {"index": 1, "uuid": "GPU-1b5d2c67-8e3f-4062-ac1f-111111111111",
         "name": "NVIDIA GeForce RTX 3090", "memory_total": 24 * GIB, "compute_capability": [8, 6],
         "pci_bus_id": "00000000:02:00.0"},
    ]
    assert readings.nvml_status()["available"] is True


def test_nvml_starts_once_and_static_fields_are_read_once(fake_nvml):
    for _ in range(3):
        readings.snapshot()
    readings.list_gpus()

    assert fake_nvml.calls["nvmlInit"] == 1
    assert fake_nvml.calls["nvmlDeviceGetHandleByIndex"] == 2
    assert fake_nvml.calls["nvmlDeviceGetCudaComputeCapability"] == 2
    assert fake_nvml.calls["nvmlDeviceGetUtilizationRates"] == 6


def test_a_gpu_failing_mid_sample_hides_nothing_else(fake_nvml):
    readings.snapshot()  # NVML started, static fields read
    lost = fake_nvml.gpus[1]
    lost.fail_after_calls = lost.calls + 3  # three reads succeed, then the GPU is lost

    reading = readings.snapshot()

    assert_valid(reading)
    healthy, failing = reading["gpus"]
    assert healthy["error"] is None and healthy["utilization"]["gpu"] == 87
    assert "GPU is lost" in failing["error"]
    assert (failing["index"], failing["name"]) == (1, "NVIDIA GeForce RTX 3090")
    assert failing["memory"]["total"] == 24 * GIB, "static fields read at start are kept"
    read = [path for path in DYNAMIC_FIELDS if field(failing, path) is not None]
    assert 0 < len(read) < len(DYNAMIC_FIELDS), "some fields were read before the failure"
    assert reading["cpu"]["count"] == psutil.cpu_count()


def test_a_gpu_lost_before_the_sample_is_listed_with_its_error(fake_nvml):
    readings.snapshot()
    fake_nvml.gpus[0].fail_after_calls = fake_nvml.gpus[0].calls

    first, second = readings.snapshot()["gpus"]

    assert "GPU is lost" in first["error"]
    assert all(field(first, path) is None for path in DYNAMIC_FIELDS)
    assert second["utilization"]["gpu"] == 3 and second["error"] is None


def test_mig_instances_are_listed_under_their_parent(make_fake_nvml, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    parent = FakeGpu(
        name="NVIDIA H100 80GB HBM3", uuid="GPU-mig-parent", memory_total=80 * GIB,
        memory_used=12 * GIB,
        mig=[FakeMig("MIG-aaaa", 20 * GIB, 10 * GIB), FakeMig("MIG-bbbb", 40 * GIB, 2 * GIB)],
        unsupported={"nvmlDeviceGetUtilizationRates"},  # as NVML says with MIG on
    )
    make_fake_nvml(NvmlSpec(gpus=[parent]))

    reading = readings.snapshot()

    assert_valid(reading)
    (gpu,) = reading["gpus"]
    unreported = {"gpu": None, "memory": None, "reason": MIG_UTILIZATION}
    assert gpu["mig"] == {"enabled": True, "instances": [
        {"index": 0, "uuid": "MIG-aaaa", "cuda_index": 0,
         "memory": {"used": 10 * GIB, "total": 20 * GIB}, "utilization": unreported},
        {"index": 1, "uuid": "MIG-bbbb", "cuda_index": 1,
         "memory": {"used": 2 * GIB, "total": 40 * GIB}, "utilization": unreported},
    ]}
    assert gpu["utilization"] == unreported and "MIG" in unreported["reason"]
    assert gpu["cuda_index"] is None, "a GPU split into MIG instances is no CUDA device itself"
    assert gpu["error"] is None


def test_mig_utilization_is_null_even_where_nvml_answers_zero(make_fake_nvml):
    parent = FakeGpu(name="NVIDIA A100-SXM4-40GB", uuid="GPU-mig-zero", memory_total=40 * GIB,
                     utilization_gpu=0, mig=[FakeMig("MIG-cccc", 10 * GIB)])
    fake = make_fake_nvml(NvmlSpec(gpus=[parent]))

    (gpu,) = readings.snapshot()["gpus"]

    assert gpu["utilization"]["gpu"] is None and gpu["utilization"]["reason"]
    assert fake.calls["nvmlDeviceGetUtilizationRates"] == 0


def test_the_reading_says_where_it_runs(fake_nvml, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    monkeypatch.setenv("SLURM_GPUS_PER_TASK", "2")

    reading = readings.snapshot()

    assert_valid(reading)
    assert reading["environment"]["kind"] == "slurm"
    assert reading["environment"]["details"]["cpus_per_task"] == 8


def test_processes_say_whether_they_compute(fake_nvml):
    me = os.getpid()
    fake_nvml.gpus[0].processes = [(me, 3 * GIB)]
    fake_nvml.gpus[1].graphics_processes = [(me, 1 * GIB)]

    first, second = readings.snapshot()["gpus"]

    assert [p["compute"] for p in first["processes"]] == [True]
    assert [p["compute"] for p in second["processes"]] == [False]


def test_processes_without_memory_figures_and_from_both_lists(fake_nvml):
    me = os.getpid()
    fake_nvml.gpus[0].processes = [(me, 3 * GIB)]
    fake_nvml.gpus[0].graphics_processes = [(me, 1 * GIB)]
    fake_nvml.gpus[1].processes = [(me, None)]

    first, second = readings.snapshot()["gpus"]

    assert [(p["pid"], p["memory_used"]) for p in first["processes"]] == [(me, 3 * GIB)]
    assert [(p["pid"], p["memory_used"]) for p in second["processes"]] == [(me, None)]


def test_process_lists_from_a_driver_older_than_the_bindings(fake_nvml):
    me = os.getpid()
    old = fake_nvml.gpus[0]
    old.missing_in_driver = {"nvmlDeviceGetComputeRunningProcesses",
                             "nvmlDeviceGetGraphicsRunningProcesses"}
    old.processes = [(me, 2 * GIB)]

    gpu = readings.snapshot()["gpus"][0]

    assert [(p["pid"], p["memory_used"]) for p in gpu["processes"]] == [(me, 2 * GIB)]
    assert gpu["error"] is None
    assert fake_nvml.calls["nvmlDeviceGetComputeRunningProcesses_v2"] == 1


# -- GPU processes: real processes, labelled ---------------------------------------------------

KERNEL_LIKE = textwrap.dedent("""
    import os, sys
    child = os.fork()
    if child == 0:
        sys.stdin.read()
        os._exit(0)
    print(child, flush=True)
    sys.stdin.read()
    os.waitpid(child, 0)
""")


@pytest.fixture
def processes():
    started = []

    def start(*args, command=(sys.executable, "-c"), **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(
            [*command, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, **kwargs,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stdin.close()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_kernels_and_processes_forked_from_them_are_labelled(fake_nvml, processes, tmp_path):
    kernel_id = str(uuid.uuid4())
    kernel = processes(KERNEL_LIKE, "-f", str(tmp_path / f"kernel-{kernel_id}.json"))
    forked = int(kernel.stdout.readline())
    fake_nvml.gpus[0].processes = [(kernel.pid, 1 * GIB), (forked, 5 * GIB)]

    by_pid = {p["pid"]: p for p in readings.snapshot()["gpus"][0]["processes"]}

    assert by_pid[kernel.pid]["kernel_id"] == kernel_id
    assert by_pid[kernel.pid]["role"] == "kernel"
    assert by_pid[forked]["kernel_id"] == kernel_id
    assert by_pid[forked]["role"] == "kernel-child"
    assert by_pid[forked]["rank"] is None
    assert f"kernel-{kernel_id}.json" in by_pid[forked]["command"]
    assert by_pid[forked]["user"] == psutil.Process().username()
    assert by_pid[forked]["memory_used"] == 5 * GIB


def test_ranks_started_with_the_magic_variables_are_labelled(fake_nvml, processes):
    env = {**os.environ, KERNEL_ID_VAR: "k-1234", RANK_VAR: "1", RUN_ID_VAR: "run-7"}
    rank = processes("import sys; print('ready', flush=True); sys.stdin.read()", env=env)
    rank.stdout.readline()
    fake_nvml.gpus[1].processes = [(rank.pid, 2 * GIB)]

    (process,) = readings.snapshot()["gpus"][1]["processes"]

    assert process["role"] == "rank"
    assert (process["kernel_id"], process["rank"], process["run_id"]) == ("k-1234", 1, "run-7")


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
def test_other_users_processes_show_no_command_line(fake_nvml, processes, tmp_path):
    nobody = 65534
    other = processes("echo ready; cat", f"kernel-{uuid.uuid4()}.json", command=("/bin/sh", "-c"),
                      user=nobody, group=nobody, cwd="/")
    other.stdout.readline()
    fake_nvml.gpus[0].processes = [(other.pid, 1 * GIB)]

    (process,) = readings.snapshot()["gpus"][0]["processes"]

    assert process["user"] == psutil.Process(other.pid).username() != psutil.Process().username()
    assert process["command"] is None and process["name"] is None
    assert process["kernel_id"] is None and process["role"] is None
    assert process["memory_used"] == 1 * GIB


def test_a_pid_this_machine_cannot_see_is_listed_unlabelled(fake_nvml):
    unseen = max(psutil.pids()) + 100_000  # as with host pids seen from inside a container
    fake_nvml.gpus[0].processes = [(unseen, 4 * GIB)]

    (process,) = readings.snapshot()["gpus"][0]["processes"]

    assert process["pid"] == unseen and process["memory_used"] == 4 * GIB
    assert process["user"] is None and process["kernel_id"] is None


# -- the shared sampler ------------------------------------------------------------------------


def test_nvml_calls_do_not_grow_with_the_number_of_readers(fake_nvml):
    sampler = readings.Sampler(interval=3600)  # one reading, then none for an hour
    try:
        first = sampler.latest()
        calls = fake_nvml.device_calls()

        def read_many():
            for _ in range(50):
                assert sampler.latest()["timestamp"] == first["timestamp"]
                assert sampler.cached() is not None

        readers = [threading.Thread(target=read_many) for _ in range(8)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()

        assert fake_nvml.device_calls() == calls
        assert sampler.samples_taken == 1
    finally:
        sampler.stop()


def test_latest_is_a_copy_and_cached_is_shared(fake_nvml):
    sampler = readings.Sampler(interval=3600)
    try:
        copy = sampler.latest()
        copy["gpus"].clear()
        assert len(sampler.latest()["gpus"]) == 2
        assert sampler.cached() is sampler.cached()
    finally:
        sampler.stop()


def test_the_sampler_follows_the_machine(fake_nvml):
    sampler = readings.Sampler(interval=readings.MIN_INTERVAL)
    try:
        assert sampler.latest()["gpus"][0]["utilization"]["gpu"] == 87
        fake_nvml.gpus[0].utilization_gpu = 12
        fake_nvml.gpus[1].fail_after_calls = 0

        later = sampler.wait_next()

        assert later["gpus"][0]["utilization"]["gpu"] == 12
        assert "GPU is lost" in later["gpus"][1]["error"]
    finally:
        sampler.stop()


def test_the_sampler_stops_when_unused_and_starts_again_on_a_read(nvml_missing):
    sampler = readings.Sampler(interval=readings.MIN_INTERVAL, idle_timeout=0.5)
    first = sampler.latest()

    assert sampler.join(timeout=60), "the sampler did not stop without readers"
    assert not sampler.running
    taken = sampler.samples_taken

    again = sampler.latest()
    try:
        assert sampler.running
        assert sampler.samples_taken > taken
        assert again["timestamp"] > first["timestamp"]
    finally:
        sampler.stop()
    assert not sampler.running


def test_the_process_sampler_is_one_object_configured_by_its_callers(nvml_missing, tmp_path):
    sampler = readings.get_sampler(2.0, disk_path=tmp_path)
    try:
        assert readings.get_sampler() is sampler
        assert sampler.interval == 2.0
        assert sampler.latest()["disk"]["path"] == str(tmp_path)
    finally:
        readings.shutdown()
    assert readings.get_sampler() is not sampler


@pytest.mark.parametrize("interval", [0.1, 0, -1, "1", None, float("nan"), True])
def test_a_too_short_or_odd_interval_is_refused(interval):
    with pytest.raises(ValueError, match="at least 0.25") as refused:
        readings.Sampler(interval)
    assert repr(interval) in str(refused.value)


def test_a_forked_child_gets_its_own_sampler(nvml_missing):
    parent = readings.get_sampler(readings.MIN_INTERVAL)
    parent.latest()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            sampler = readings.get_sampler()
            ok = sampler is not parent and sampler.latest(timeout=30)["cpu"]["count"] > 0
            os.write(write, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 2)
    os.close(read)
    os.waitpid(child, 0)
    assert answer == b"ok"


def test_readings_never_import_torch_or_jupyter():
    code = textwrap.dedent("""
        import sys
        import lightning_magic.readings as readings
        assert "pynvml" not in sys.modules, "pynvml imported on import"
        readings.snapshot()
        readings.get_sampler().latest()
        readings.list_gpus()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in
                        {"torch", "lightning", "jupyter_server", "jupyter_client", "IPython"})
        print(loaded)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- real NVML ---------------------------------------------------------------------------------


@pytest.fixture
def real_nvml():
    status = readings.nvml_status()
    if not status["available"] or not readings.list_gpus():
        pytest.skip(f"NVML sees no NVIDIA GPU here: {status['reason'] or 'no device'}")
    return status


@pytest.mark.gpu
def test_real_gpus_are_read(real_nvml):
    inventory = readings.list_gpus()
    reading = readings.snapshot()

    assert_valid(reading)
    assert [g["uuid"] for g in reading["gpus"]] == [g["uuid"] for g in inventory]
    for gpu in reading["gpus"]:
        assert gpu["name"] and gpu["memory"]["total"] > 0
        assert 0 <= gpu["memory"]["used"] <= gpu["memory"]["total"]
    assert "torch" not in sys.modules or not _cuda_initialized()


def _cuda_initialized() -> bool:
    import torch

    return torch.cuda.is_initialized()


@pytest.mark.gpu
def test_reading_gpus_does_not_put_this_process_on_a_gpu(real_nvml):
    readings.snapshot()
    me = os.getpid()

    on_gpus = [p["pid"] for gpu in readings.snapshot()["gpus"] for p in gpu["processes"]]

    assert me not in on_gpus


def test_ranks_of_a_published_run_are_labelled(fake_nvml, tmp_path, monkeypatch):
    """A forked rank's environment cannot be read from outside; the run its kernel published
    (run_registry) says which pid is which rank."""
    from lightning_magic.readings.runs import PublishedRun

    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    rank_child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                  stdin=subprocess.PIPE)
    try:
        fake_nvml.gpus[0].processes = [(rank_child.pid, 3 * GIB)]
        with PublishedRun({"run_id": "r1", "kernel_id": "k-1", "rank_pids": [os.getpid(),
                                                                             rank_child.pid],
                           "devices": [0, 1], "accelerator": "gpu", "started": 0.0,
                           "model": "Net", "epoch": 0, "step": 0, "metrics": {},
                           "status": "running"}, str(tmp_path)):
            [process] = readings.snapshot()["gpus"][0]["processes"]
        assert (process["rank"], process["run_id"], process["kernel_id"], process["role"]) == \
            (1, "r1", "k-1", "rank")
        [process] = readings.snapshot()["gpus"][0]["processes"]  # the run has ended
        assert process["role"] != "rank"
    finally:
        rank_child.stdin.close()
        rank_child.wait()
