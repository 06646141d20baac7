"""``%%lightning_train --export``: cells from a real shell's history to a script that really trains.

The scripts run for real: under two torchrun processes acting as two nodes on 127.0.0.1 (gloo,
CPU), and with plain ``python``.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from IPython.core.error import UsageError

from lightning_magic.export import export_cell
from lightning_magic.options.flags import TrainFlags
from lightning_magic.export.sources import cell_code

VENV_BIN = Path(sys.executable).parent
TORCHRUN = VENV_BIN / "torchrun"
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "scale-out.ipynb"

IMPORTS = """\
import torch
from torch.utils.data import DataLoader, TensorDataset
import lightning as L
%env LIGHTNING_MAGIC_EXPORT_TEST=1
"""

MODEL = """\
!echo defining the model
class TinyModel(L.LightningModule):
    def __init__(self, width=4):
        super().__init__()
        self.layer = torch.nn.Linear(width, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def on_fit_start(self):
        print(f"world_size={self.trainer.world_size} rank={self.trainer.global_rank}", flush=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

TinyModel()
"""

UNRELATED = """\
unrelated_marker = 42
unrelated_marker
"""

DATA = """\
files = !ls
%time scale = 2.0
def make_loader(n=32):
    x = torch.randn(n, 4)
    return DataLoader(TensorDataset(x, scale * x.sum(1, keepdim=True)), batch_size=8)
make_loader().dataset.tensors[0].shape
"""

TRAIN_CELL = """\
model = TinyModel()
train_loader = make_loader()
val_loader = make_loader(16)
"""

TRAINER_FLAGS = {"max_epochs": 2, "limit_train_batches": 2}


@pytest.fixture
def shell(ip):
    """The real shell (conftest's ``ip``, in an empty directory) with an empty input history."""
    ip.reset(new_session=True)
    yield ip
    ip.reset(new_session=True)


def run_cells(ip, *cells):
    for source in cells:
        result = ip.run_cell(source, store_history=True)
        assert result.success, (source, result.error_before_exec or result.error_in_exec)


def export(ip, cell=TRAIN_CELL, path="job/train.py", devices_per_node=1, accelerator="cpu",
           model_name=None, data_name=None, val_data_name=None, **overrides):
    """``export_cell`` as the magic calls it: the cell's flags, and devices resolved for the job."""
    values = dict(TRAINER_FLAGS, export=path, model=model_name, data=data_name,
                  val_data=val_data_name)
    values.update(overrides)
    return export_cell(ip, cell, TrainFlags(**values), accelerator, devices_per_node)


def fit_line(script: str) -> str:
    return next(line.strip() for line in script.splitlines() if "trainer.fit(" in line)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1", PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    for name in [n for n in env if n.startswith(("SLURM_", "TORCHELASTIC_", "LSB_"))]:
        del env[name]
    return env


# --- what the script holds -------------------------------------------------------------------


def test_script_holds_the_cell_and_only_the_cells_it_depends_on(shell):
    run_cells(shell, IMPORTS, MODEL, UNRELATED, DATA)
    job = export(shell, num_nodes=2, seed=7, ckpt_dir="ckpts")
    script = job.script_path.read_text()

    assert job.cells == ("In[1]", "In[2]", "In[4]", "In[5]")
    headings = [
        line
        for line in script.splitlines()
        if line.startswith("# In[") or "%%lightning_train cell (" in line
    ]
    assert headings == ["# In[1]", "# In[2]", "# In[4]", "# The %%lightning_train cell (In[5])"]
    assert "unrelated_marker" not in script
    # Magics, shell escapes and display-only lines are gone; %time's statement stays.
    for gone in (
        "get_ipython",
        "%env",
        "!echo",
        "!ls",
        "files =",
        "TinyModel()\n\n",
        "tensors[0].shape",
    ):
        assert gone not in script, gone
    assert "\nscale = 2.0\n" in script
    assert (
        "lightning_magic" not in script.split('"""', 2)[2]
    )  # standalone: only the docstring names it
    assert "seed_everything(7)" in script
    assert 'callbacks=[ModelCheckpoint(dirpath="ckpts", save_last=True)]' in script
    assert 'strategy="ddp"' in script and "num_nodes=2 if launched_on_a_cluster else 1" in script
    assert "max_epochs=2," in script and "precision=" not in script  # Lightning's default
    assert fit_line(script) == (
        "trainer.fit(model, train_dataloaders=train_loader, val_dataloaders=val_loader)"
    )
    # Training happens only when run as a script.
    main = script.index('if __name__ == "__main__":')
    assert script.index("Trainer(") > main and script.index("model = TinyModel()") < main
    compile(script, str(job.script_path), "exec")


def test_exporting_does_not_run_the_cell(shell):
    run_cells(shell, IMPORTS, MODEL, DATA)
    export(shell, cell=TRAIN_CELL + "exported_cell_ran = True\n")
    assert "exported_cell_ran" not in shell.user_ns
    assert "model" not in shell.user_ns


def test_later_definitions_win_and_rebinding_pulls_in_the_earlier_one(shell):
    run_cells(
        shell,
        IMPORTS,
        MODEL,
        "width = 3",
        "width = 4",
        "width = width + 0",
        "def make_loader(n=32):\n"
        "    return DataLoader(TensorDataset(torch.randn(n, width), torch.randn(n, 1)))",
    )
    job = export(shell, cell="model = TinyModel(width)\nloader = make_loader()")
    assert job.cells == ("In[1]", "In[2]", "In[4]", "In[5]", "In[6]", "In[7]")


def test_a_training_cell_run_before_counts_but_an_exported_one_does_not(shell):
    # %%lightning_train ran this body in the user's namespace; an exported body never ran.
    trained = cell_code(shell, 2, "%%lightning_train --devices 2\nclass Net(TinyBase): pass")
    assert trained.code == "class Net(TinyBase): pass"
    assert (trained.binds, trained.needs) == ({"Net"}, {"TinyBase"})
    exported = cell_code(
        shell, 3, "%%lightning_train --export x.py --num-nodes 2\nclass Other: pass"
    )
    assert (exported.code, exported.binds) == ("", set())


@pytest.mark.parametrize(
    ("source", "needs", "wants", "binds"),
    [
        ("df = df.dropna()", set(), {"df"}, {"df"}),
        ("x = 1\nprint(x)", set(), set(), {"x"}),
        ("total = sum(v * k for v in values)", {"values", "k"}, set(), {"total"}),
        (
            "def f(a):\n    return helper(a) + a\ndef helper(b):\n    return b",
            set(),
            set(),
            {"f", "helper"},
        ),
        ("def f(a=DEFAULT):\n    return G", {"DEFAULT", "G"}, set(), {"f"}),
        (
            "class M(Base):\n    n = 1\n    m = n + K\n    def go(self):\n        return n",
            {"Base", "K", "n"},
            set(),
            {"M"},
        ),
        ("for i in range(3):\n    last = i", set(), set(), {"i", "last"}),
        (
            "try:\n    import fast as impl\nexcept ImportError as e:\n    impl = None",
            set(),
            set(),
            {"impl", "e"},
        ),
        ("def setup():\n    global cfg\n    cfg = make()", {"make"}, set(), {"setup", "cfg"}),
        ("f = lambda q: q + R\ncount += 1", {"R"}, {"count"}, {"f", "count"}),
        ("import os.path, numpy as np\nfrom a.b import c as d", set(), set(), {"os", "np", "d"}),
    ],
)
def test_names_a_cell_reads_and_binds(shell, source, needs, wants, binds):
    code = cell_code(shell, 1, source)
    assert (set(code.needs), set(code.wants), set(code.binds)) == (needs, wants, binds)


def test_magics_escapes_and_display_lines_are_left_out_of_a_cell(shell):
    source = (
        "%matplotlib inline\n"
        "import os\n"
        "listing = !ls\n"
        "# the loop keeps its plain code\n"
        "for name in ['a']:\n"
        "    !echo $name\n"
        "    kept = name\n"
        "%time answer = 6 * 7\n"
        "os?\n"
        "display(answer)\n"
        "answer\n"
        "os.environ.get('HOME')\n"
    )
    code = cell_code(shell, 1, source)
    assert code.code == (
        "import os\n"
        "# the loop keeps its plain code\n"
        "for name in ['a']:\n"
        "    kept = name\n"
        "answer = 6 * 7\n"
        "os.environ.get('HOME')"
    )
    assert code.escape_bound == {"listing"}
    cell_magic = cell_code(shell, 1, "%%time\nfrom __future__ import annotations\nslow = 1\nslow")
    assert cell_magic.code == "slow = 1"
    assert cell_magic.future_imports == ("from __future__ import annotations",)
    assert cell_code(shell, 1, "%%bash\necho hi").code == ""


# --- running the script ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_script_trains_as_two_torchrun_nodes(shell, tmp_path):
    run_cells(shell, IMPORTS, MODEL, UNRELATED, DATA)
    job = export(shell, num_nodes=2, devices_per_node=1, seed=0, ckpt_dir="ckpts")
    assert job.torchrun_command.startswith(
        "torchrun --nnodes 2 --nproc-per-node 1 --node-rank $NODE_RANK"
    )

    port = free_port()
    nodes = [
        subprocess.Popen(
            [
                str(TORCHRUN),
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "job/train.py",
            ],
            cwd=tmp_path,
            env=script_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=200)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert "world_size=2 rank=0" in outputs[0], outputs[0]
    assert "world_size=2 rank=1" in outputs[1], outputs[1]
    assert "Starting with 2 processes" in outputs[0]
    # --ckpt-dir is the Trainer's default_root_dir too, as in the notebook: logs sit beside
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == [
        "epoch=1-step=4.ckpt",
        "last.ckpt",
        "lightning_logs",
    ]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_script_runs_alone_with_python_and_resumes(shell, tmp_path):
    run_cells(shell, IMPORTS, MODEL, DATA)
    export(shell, num_nodes=3, devices_per_node=1, seed=0, ckpt_dir="ckpts")

    first = subprocess.run(
        [sys.executable, "job/train.py"],
        cwd=tmp_path,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "world_size=1 rank=0" in first.stdout
    assert (tmp_path / "ckpts" / "last.ckpt").is_file()

    export(shell, num_nodes=3, seed=0, ckpt_dir="ckpts", resume="last", max_epochs=3)
    second = subprocess.run(
        [sys.executable, "job/train.py"],
        cwd=tmp_path,
        env=script_env(),
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Restored all states from the checkpoint" in second.stdout + second.stderr
    assert (tmp_path / "ckpts" / "epoch=2-step=6.ckpt").is_file()


# --- the batch file and the commands ----------------------------------------------------------


def sbatch_directives(path: Path) -> dict[str, str]:
    found = re.findall(r"^#SBATCH --([\w-]+)=(\S+)$", path.read_text(), flags=re.MULTILINE)
    return dict(found)


@pytest.mark.parametrize(
    ("num_nodes", "devices", "accelerator", "expected", "torchrun"),
    [
        (
            1,
            1,
            "cpu",
            {"nodes": "1", "ntasks-per-node": "1"},
            "torchrun --standalone --nproc-per-node 1 job/train.py",
        ),
        (
            2,
            4,
            "gpu",
            {"nodes": "2", "ntasks-per-node": "4", "gres": "gpu:4"},
            "torchrun --nnodes 2 --nproc-per-node 4 --node-rank $NODE_RANK"
            " --master-addr $MASTER_ADDR"
            " --master-port 29500 job/train.py",
        ),
        (
            8,
            2,
            "cpu",
            {"nodes": "8", "ntasks-per-node": "2"},
            "torchrun --nnodes 8 --nproc-per-node 2 --node-rank $NODE_RANK"
            " --master-addr $MASTER_ADDR"
            " --master-port 29500 job/train.py",
        ),
    ],
)
def test_batch_file_and_torchrun_command(
    shell, tmp_path, num_nodes, devices, accelerator, expected, torchrun
):
    run_cells(shell, IMPORTS, MODEL, DATA)
    job = export(shell, num_nodes=num_nodes, devices_per_node=devices, accelerator=accelerator)

    assert job.sbatch_path == tmp_path / "job" / "train.sbatch"
    text = job.sbatch_path.read_text()
    assert text.startswith("#!/bin/bash\n")
    assert sbatch_directives(job.sbatch_path) == {
        "job-name": "train",
        **expected,
        "chdir": str(tmp_path),
    }
    assert text.rstrip().splitlines()[-1] == "srun python job/train.py"
    assert job.torchrun_command == torchrun
    assert job.sbatch_command == "sbatch job/train.sbatch"
    script = job.script_path.read_text()
    assert f'accelerator="{accelerator}",' in script and f"devices={devices}," in script


def test_result_shows_paths_and_commands(shell, tmp_path):
    run_cells(shell, IMPORTS, MODEL, DATA)
    job = export(shell, num_nodes=2)
    for rendering in (repr(job), job._repr_html_()):
        assert str(tmp_path / "job" / "train.py") in rendering
        assert str(tmp_path / "job" / "train.sbatch") in rendering
        assert "srun python job/train.py" in rendering
    assert job.torchrun_command in repr(job)
    assert "MASTER_ADDR the address of node 0" in repr(job)
    assert "&lt;" not in job._repr_html_() and "<table>" in job._repr_html_()


# --- which objects: model and data ------------------------------------------------------------


DATAMODULE = """\
class Data(L.LightningDataModule):
    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(8, 4), torch.randn(8, 1)))
"""


@pytest.mark.parametrize(
    ("cell", "names", "expected"),
    [
        ("net = TinyModel()\ndm = Data()", {}, "trainer.fit(net, datamodule=dm)"),
        (
            "class Local(TinyModel):\n    pass\nloader = make_loader()",
            {},
            "trainer.fit(model, train_dataloaders=loader)",
        ),
        (
            "a = TinyModel()\nb = TinyModel()\nloader = make_loader()\nval_set = make_loader()",
            {"model_name": "b", "data_name": "loader", "val_data_name": "val_set"},
            "trainer.fit(b, train_dataloaders=loader, val_dataloaders=val_set)",
        ),
        (
            "loader = make_loader()",
            {"model_name": "TinyModel"},
            "trainer.fit(model, train_dataloaders=loader)",
        ),
        (
            "m = TinyModel()\nd = Data()",
            {"model_name": "m", "data_name": "d"},
            "trainer.fit(m, datamodule=d)",
        ),
    ],
)
def test_model_and_data_are_found_as_the_magic_finds_them(shell, cell, names, expected):
    run_cells(shell, IMPORTS, MODEL, DATA, DATAMODULE)
    script = export(shell, cell=cell, resume=None, **names).script_path.read_text()
    assert fit_line(script) == expected
    if "model," in expected:
        assert "    model = " in script


def test_resume_and_lightning_package_follow_the_model(shell):
    run_cells(
        shell,
        "import torch, pytorch_lightning as pl\nfrom torch.utils.data import DataLoader",
        "class Old(pl.LightningModule):\n"
        "    def train_dataloader(self):\n"
        "        return DataLoader([torch.zeros(1)])",
    )
    script = export(shell, cell="model = Old()", resume="ckpts/last.ckpt").script_path.read_text()
    assert "from pytorch_lightning import Trainer\n" in script
    assert fit_line(script) == 'trainer.fit(model, ckpt_path="ckpts/last.ckpt")'


@pytest.mark.parametrize(
    ("cell", "names", "message"),
    [
        (
            "a = TinyModel()\nb = TinyModel()",
            {},
            "binds 2 LightningModules (a, b): say which to train with --model NAME",
        ),
        ("loader = make_loader()", {}, "The cell binds no LightningModule (it binds loader)"),
        (
            "class Needs(TinyModel):\n"
            "    def __init__(self, width):\n"
            "        super().__init__(width)",
            {},
            "Needs needs constructor arguments",
        ),
        (
            "model = TinyModel()",
            {},
            "There is no training data for TinyModel",
        ),
        (
            "model = TinyModel()\n"
            "one = make_loader()\ntwo = make_loader()\nval_three = make_loader()",
            {},
            "binds 3 DataLoaders (one, two, val_three)",
        ),
    ],
)
def test_unclear_model_or_data_is_a_usage_error(shell, cell, names, message):
    run_cells(shell, IMPORTS, MODEL, DATA)
    with pytest.raises(UsageError, match=re.escape(message)) as error:
        export(shell, cell=cell, **names)
    assert "\n" not in str(error.value)
    assert not Path("job").exists()


# --- what cannot be exported ------------------------------------------------------------------


def test_unresolvable_names_are_listed_in_one_usage_error(shell):
    run_cells(
        shell, IMPORTS, MODEL, "def make_loader():\n    return DataLoader(dataset_from_elsewhere)"
    )
    with pytest.raises(UsageError) as error:
        export(shell, cell="model = TinyModel(mystery_width)\nloader = make_loader()")
    message = str(error.value)
    assert message.startswith("Cannot export: no earlier cell in this kernel defines ")
    assert "dataset_from_elsewhere (used in In[3])" in message
    assert "mystery_width (used in this cell)" in message
    assert "\n" not in message
    assert not Path("job").exists()


def test_a_name_only_a_shell_escape_binds_is_a_usage_error(shell):
    run_cells(shell, IMPORTS, MODEL, "names = !ls\n%env LIGHTNING_MAGIC_EXPORT_TEST=2")
    with pytest.raises(
        UsageError, match=r"only a magic or shell escape binds names \(in In\[3\]\)"
    ):
        export(shell, cell="model = TinyModel(len(names))")


@pytest.mark.parametrize(
    ("path", "message"),
    [("job.sbatch", "names the batch file"), (".", "is a directory")],
)
def test_export_path_mistakes(shell, path, message):
    run_cells(shell, IMPORTS, MODEL, DATA)
    with pytest.raises(UsageError, match=message):
        export(shell, path=path)


def test_top_level_await_cannot_be_exported(shell):
    run_cells(shell, IMPORTS, MODEL, DATA, "import asyncio\nawait asyncio.sleep(0)\nwidth = 4")
    with pytest.raises(UsageError, match="would not compile"):
        export(shell, cell="model = TinyModel(width)\nloader = make_loader()")


# --- the magic and the notebook ----------------------------------------------------------------


@pytest.mark.slow
def test_magic_exports_instead_of_training(shell, tmp_path):
    run_cells(shell, IMPORTS, MODEL, DATA)
    result = shell.run_cell(
        "%%lightning_train --export job/train.py --num-nodes 2 --accelerator cpu --devices 1"
        " --max-epochs 1\n" + TRAIN_CELL + "exported_cell_ran = True\n",
        store_history=True,
    )
    assert result.success, result.error_in_exec
    assert "exported_cell_ran" not in shell.user_ns
    assert sbatch_directives(tmp_path / "job" / "train.sbatch")["nodes"] == "2"
    assert "trainer.fit(model" in (tmp_path / "job" / "train.py").read_text()
    with pytest.raises(UsageError, match="no earlier cell"):
        shell.run_cell_magic("lightning_train", "--export job/other.py", "model = Undefined()")


@pytest.mark.slow
@pytest.mark.parametrize(("flags", "expected"), [
    # a login node without GPUs exports a job for GPU nodes
    ("--accelerator gpu --devices 4 --num-nodes 2 --precision bf16-mixed",
     {"nodes": "2", "ntasks-per-node": "4", "gres": "gpu:4"}),
    ("--devices gpu:0,gpu:1,gpu:2 --num-nodes 3",
     {"nodes": "3", "ntasks-per-node": "3", "gres": "gpu:3"}),
    ("--accelerator cpu --devices 2", {"nodes": "1", "ntasks-per-node": "2"}),
])
def test_magic_exports_gpu_jobs_from_a_machine_without_gpus(shell, tmp_path, flags, expected):
    run_cells(shell, IMPORTS, MODEL, DATA)
    result = shell.run_cell(f"%%lightning_train --export job/train.py {flags}\n" + TRAIN_CELL,
                            store_history=True)
    assert result.success, result.error_in_exec
    directives = sbatch_directives(tmp_path / "job" / "train.sbatch")
    assert {k: directives.get(k) for k in expected} == expected
    if "gres" not in expected:
        assert "gres" not in directives
    script = (tmp_path / "job" / "train.py").read_text()
    assert ('"gpu"' in script) == ("gres" in expected)


def test_magic_export_without_a_gpu_count_says_what_to_give(shell):
    from lightning_magic.readings import list_gpus

    if list_gpus():
        pytest.skip("this machine has GPUs to count")
    with pytest.raises(UsageError, match="--accelerator gpu --devices 4"):
        shell.run_cell_magic("lightning_train", "--export job/x.py --accelerator gpu", "x = 1")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scale_out_notebook_executes(shell, tmp_path, kernel_env):
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook,
        timeout=240,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outputs = "\n".join(
        str(output.get("text", "")) + str(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )
    errors = [
        o for c in notebook.cells for o in c.get("outputs", []) if o["output_type"] == "error"
    ]
    assert not errors, errors
    # The job names the training cell by the number the notebook shows for it (IPython 9
    # counts a cell before it runs; the export must not name the next one).
    exporting = next(c for c in notebook.cells if c.cell_type == "code" and "--export" in c.source)
    number = exporting.execution_count
    shown = "".join(str(o.get("data", {}).get("text/plain", "")) for o in exporting.outputs)
    assert shown.rstrip().endswith(f"In[{number}]"), shown
    script = (tmp_path / "lightning_runs" / "scale-out" / "train.py").read_text()
    assert f"# The %%lightning_train cell (In[{number}])" in script
    assert "sbatch lightning_runs/scale-out/train.sbatch" in outputs
    assert "torchrun --nnodes 2 --nproc-per-node 2" in outputs
    assert "#SBATCH --nodes=2\n#SBATCH --ntasks-per-node=2" in outputs
    assert (
        'if __name__ == "__main__":' in outputs and "%env" not in outputs.split("Training job")[1]
    )
    # The exported script, run alone with python, trained on two processes of this machine.
    assert "Starting with 2 processes" in outputs and "`Trainer.fit` stopped" in outputs
    assert (tmp_path / "lightning_runs" / "scale-out" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("strategy, expected", [
    (None, 'strategy="ddp"'),
    ("ddp_notebook_find_unused_parameters_true", 'strategy="ddp_find_unused_parameters_true"'),
    ("fsdp", 'strategy="fsdp"'),
    ("deepspeed_stage_2", 'strategy="deepspeed_stage_2"'),
    ("model_parallel", "strategy=ModelParallelStrategy()"),
])
def test_the_script_launches_the_strategy_the_flags_name(shell, strategy, expected):
    run_cells(shell, IMPORTS, MODEL, DATA)
    script = export(shell, strategy=strategy).script_path.read_text()
    assert expected in script
    compile(script, "train.py", "exec")


def test_a_module_the_cell_imports_is_found_without_importing_it(shell, tmp_path, monkeypatch):
    package = tmp_path / "site" / "zoo_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .nets import Net\n")
    (package / "nets.py").write_text(
        "import torch\nimport lightning.pytorch as pl\n\n"
        "class Base(pl.LightningModule):\n"
        "    def configure_optimizers(self):\n"
        "        return torch.optim.SGD(self.parameters(), lr=0.1)\n\n"
        "class Net(Base):\n"
        "    def __init__(self, width=4):\n"
        "        super().__init__()\n"
        "        self.layer = torch.nn.Linear(width, 1)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    run_cells(shell, IMPORTS, DATA, "model = 'a stale value from an earlier cell'")
    cell = "from zoo_models import Net\nmodel = Net()\nloader = make_loader()\n"
    script = export(shell, cell=cell, resume=None).script_path.read_text()
    assert fit_line(script) == "trainer.fit(model, train_dataloaders=loader)"
    assert "from zoo_models import Net" in script
    assert "zoo_models" not in sys.modules, "exporting imported the cell's module"


def test_lightnings_own_demo_model_imported_by_the_cell_is_the_model(shell):
    run_cells(shell, IMPORTS, MODEL, DATA, "model = TinyModel()")  # a stale model of another class
    cell = ("from lightning.pytorch.demos.boring_classes import BoringModel\n"
            "model = BoringModel()\n")
    result = export(shell, cell=cell, resume=None)
    script = result.script_path.read_text()
    assert fit_line(script) == "trainer.fit(model)"
    assert "model = BoringModel()" in script and "class TinyModel" not in script
