"""The runtime directory is input: real hostile files planted next to the run files (a FIFO with
no writer, a symlink to /dev/zero, 100 MiB, wrong types, NaN, pid 1, rank pids that are not the
kernel's children, other users' files) never hang, never raise, and never reach the JSON unless
they fit the schema — in ``list_runs``/``rank_labels``, in ``%gpu_status`` and in a real
``GET /gpu-status``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import jsonschema
import psutil
import pytest
from support.nvml_standin import GIB, another_users_process  # noqa: F401 - fixture
from support.runs import children, dead_pid, state
from support.servers import SCHEMA, get_json, server_config

from lightning_magic import readings
from lightning_magic.readings.runs import MAX_FILE_BYTES, PREFIX, PublishedRun, list_runs, \
    rank_labels

pytest_plugins = ["pytest_jupyter.jupyter_server"]
RUN_SCHEMA = {**SCHEMA["properties"]["runs"]["items"], "$defs": SCHEMA["$defs"]}


def plant(directory, name: str, content) -> str:
    path = os.path.join(str(directory), f"{PREFIX}{name}.json")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(content if isinstance(content, str) else json.dumps(content))
    return path


def mine(run_id: str, **fields) -> dict:
    """A run file as this process's kernel would write it (the test process is the kernel)."""
    return state(run_id, pid_started=psutil.Process().create_time(), **fields)


def listed(directory, **kwargs) -> list[dict]:
    """list_runs in a thread, bounded: a read that blocks fails the test instead of hanging it."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(list_runs(str(directory), **kwargs)),
                              daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "list_runs blocked on a file in the runtime directory"
    runs = result[0]
    for run in runs:
        jsonschema.validate(run, RUN_SCHEMA)
        json.dumps(run, allow_nan=False)
    return runs


@pytest.fixture
def hostile(tmp_path):
    """A runtime directory holding one good run and every kind of hostile file."""
    directory = tmp_path / "runtime"
    directory.mkdir()
    os.mkfifo(directory / f"{PREFIX}fifo.json")                      # no writer, ever
    os.symlink("/dev/zero", directory / f"{PREFIX}zero.json")
    os.symlink(plant(directory, "target", mine("target")), directory / f"{PREFIX}link.json")
    with open(directory / f"{PREFIX}huge.json", "wb") as handle:       # 100 MiB, sparse
        handle.write(json.dumps(mine("huge")).encode()[:-1] + b', "pad": "')
        handle.truncate(100 * 2**20)
    (directory / f"{PREFIX}dir.json").mkdir()
    plant(directory, "nested", "[" * 200_000 + "]" * 200_000)
    (directory / f"{PREFIX}latin1.json").write_bytes(b'{"run_id": "\xff"}')
    plant(directory, "bigint", '{"pid": ' + "9" * 5000 + "}")
    plant(directory, "listkernel", mine("listkernel", kernel_id=["a", "b"]))
    plant(directory, "nan", '{"run_id": "nan", "kernel_id": "k", "pid": %d, "pid_started": %r, '
          '"rank_pids": [], "devices": 2, "accelerator": "cpu", "started": NaN, "model": "M", '
          '"epoch": 0, "step": 0, "metrics": {}, "status": "running"}'
          % (os.getpid(), psutil.Process().create_time()))
    plant(directory, "nanmetric", json.dumps(mine("nanmetric", metrics={"loss": 0.5}))
          .replace("0.5", "NaN").replace('"step": 0', '"step": Infinity'))
    plant(directory, "init", state("init", pid=1, pid_started=psutil.Process(1).create_time()))
    plant(directory, "parent", state("parent", pid=os.getppid()))
    plant(directory, "self", mine("self", rank_pids=[os.getpid(), os.getppid(), 1]))
    plant(directory, "good", mine("good", rank_pids=[], metrics={"loss": 0.25}, epoch=3,
                                  ckpt_dir="/data/runs/good"))
    return directory


def test_hostile_files_are_read_safely_and_only_what_fits_is_listed(hostile):
    runs = {run["run_id"]: run for run in listed(hostile)}
    assert sorted(runs) == ["good", "listkernel", "nanmetric", "self", "target"]
    assert runs["listkernel"]["kernel_id"] is None
    assert runs["nanmetric"]["metrics"] == {"loss": None} and runs["nanmetric"]["step"] is None
    assert runs["self"]["rank_pids"] == []
    assert runs["good"]["metrics"] == {"loss": 0.25} and runs["good"]["epoch"] == 3
    assert runs["good"]["ckpt_dir"] == "/data/runs/good"
    assert rank_labels(str(hostile)) == {}
    assert os.path.exists(hostile / f"{PREFIX}init.json")  # skipped, not deleted: init lives


def test_the_size_cap_is_the_file_and_not_its_name(tmp_path):
    plant(tmp_path, "padded", {**mine("padded"), "pad": " " * (MAX_FILE_BYTES - 400)})
    plant(tmp_path, "over", {**mine("over"), "pad": " " * MAX_FILE_BYTES})
    assert [run["run_id"] for run in listed(tmp_path)] == ["padded"]


@pytest.mark.parametrize("field, value, expected", [
    ("kernel_id", {"x": 1}, ("null", None)), ("epoch", "3", ("null", None)),
    ("step", 1.5, ("null", None)), ("devices", {"gpu": 0}, ("null", None)),
    ("devices", [0, "1"], ("null", None)), ("num_processes", "2", ("absent", None)),
    ("ckpt_dir", ["a"], ("absent", None)), ("notebook_path", "/etc/passwd", ("absent", None)),
    ("secret", "x", ("absent", None)), ("metrics", {"loss": "high", "acc": 0.5, "ok": True},
                                         ("value", {"acc": 0.5})),
    ("accelerator", "tpu", ("dropped", None)), ("status", 5, ("dropped", None)),
    ("model", "M" * 10_000, ("dropped", None)), ("run_id", "../escape", ("dropped", None)),
    ("pid", True, ("dropped", None)), ("pid", 2**40, ("dropped", None)),
    ("rank_pids", "12", ("dropped", None)), ("rank_pids", [True], ("dropped", None)),
    ("rank_pids", {"0": 5}, ("dropped", None)), ("started", "yesterday", ("dropped", None)),
    ("metrics", [1], ("dropped", None)),
])
def test_each_field_is_checked_against_the_schema(tmp_path, field, value, expected, caplog):
    plant(tmp_path, "run", {**mine("run"), field: value})
    with caplog.at_level("DEBUG", logger="lightning_magic.readings.runs"):
        runs = listed(tmp_path)
    kind, wanted = expected
    if kind == "dropped":
        assert runs == []
    else:
        (run,) = runs
        if kind == "null":
            assert run[field] is None
        elif kind == "absent":
            assert field not in run
        else:
            assert run[field] == wanted
    if kind != "absent" or field in ("num_processes", "ckpt_dir"):
        assert any(field in record.getMessage() for record in caplog.records)


def test_a_run_counts_only_while_its_kernel_is_the_publisher(tmp_path):
    plant(tmp_path, "nostart", state("nostart"))                       # no pid_started
    plant(tmp_path, "reused", state("reused", pid_started=12345.0))    # another process's pid
    plant(tmp_path, "gone", state("gone", pid=dead_pid()))
    plant(tmp_path, "live", mine("live"))
    assert [run["run_id"] for run in listed(tmp_path)] == ["live"]
    assert sorted(os.listdir(tmp_path)) == [f"{PREFIX}live.json", f"{PREFIX}nostart.json"]


def test_ranks_count_only_when_they_descend_from_the_kernel(tmp_path):
    outsider = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE, start_new_session=True)
    try:
        with children(2) as (a, b):
            plant(tmp_path, "mixed", mine("mixed", rank_pids=[a, os.getpid()]))
            plant(tmp_path, "ppid", mine("ppid", rank_pids=[a, os.getppid()]))
            plant(tmp_path, "ranks", mine("ranks", rank_pids=[a, b], kernel_id="k"))
            runs = {run["run_id"]: run["rank_pids"] for run in listed(tmp_path)}
            labels = rank_labels(str(tmp_path))
        assert runs == {"mixed": [], "ppid": [], "ranks": [a, b]}
        assert labels == {a: {"kernel_id": "k", "rank": 0, "run_id": "ranks"},
                          b: {"kernel_id": "k", "rank": 1, "run_id": "ranks"}}
        assert outsider.pid not in labels
    finally:
        outsider.stdin.close()
        outsider.wait(30)


def test_other_users_runs_follow_the_process_setting(tmp_path, another_users_process):
    nobody = psutil.Process(another_users_process)
    path = plant(tmp_path, "theirs", state("theirs", pid=nobody.pid,
                                           pid_started=nobody.create_time(), ckpt_dir="/home/x"))
    os.chown(path, 65534, 65534)
    forged = plant(tmp_path, "forged", mine("forged"))   # names this process, owned by nobody
    os.chown(forged, 65534, 65534)
    (shown,) = listed(tmp_path)
    assert shown["run_id"] == "theirs" and "ckpt_dir" not in shown
    assert listed(tmp_path, show_other_users=False) == []
    assert rank_labels(str(tmp_path), show_other_users=False) == {}


def test_gpu_status_magic_never_raises_on_hostile_files(ip, fake_nvml, hostile, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(hostile))
    with children(1) as (rank,):
        plant(hostile, "ranked", mine("ranked", rank_pids=[rank]))
        fake_nvml.gpus[0].processes = [(os.getpid(), GIB), (1, GIB), (rank, GIB)]
        html = ip.run_line_magic("gpu_status", "")._repr_html_()
    assert html.count("rank 0") == 1  # the real rank; not the kernel, not init


@pytest.fixture
def jp_server_config():
    return server_config()


@pytest.fixture(autouse=True)
def fresh_readings():
    readings.shutdown()
    yield
    readings.shutdown()


async def test_the_endpoint_serves_hostile_runtime_directories(fake_nvml, jp_fetch,
                                                               jp_runtime_dir):
    plant(jp_runtime_dir, "listkernel", mine("listkernel", kernel_id=["a"]))
    os.mkfifo(os.path.join(str(jp_runtime_dir), f"{PREFIX}fifo.json"))
    os.symlink("/dev/zero", os.path.join(str(jp_runtime_dir), f"{PREFIX}zero.json"))
    plant(jp_runtime_dir, "nan", json.dumps(mine("nan", metrics={"loss": 0.5}))
          .replace("0.5", "NaN"))
    plant(jp_runtime_dir, "self", mine("self", rank_pids=[os.getpid()]))
    fake_nvml.gpus[0].processes = [(os.getpid(), GIB)]
    body = await get_json(jp_fetch)
    jsonschema.validate(body, SCHEMA)
    assert sorted(run["run_id"] for run in body["runs"]) == ["listkernel", "nan", "self"]
    assert {run["run_id"]: run["metrics"] for run in body["runs"]}["nan"] == {"loss": None}
    (server,) = body["gpus"][0]["processes"]
    assert server["role"] != "rank" and server["rank"] is None
