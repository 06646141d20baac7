"""Flag parsing and validation: every rejection is a one-line UsageError naming the flag and value."""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError

from lightning_magic.options import flags
from lightning_magic.magic import LightningMagics


def parse(line: str) -> flags.TrainFlags:
    return flags.parse(line, LightningMagics.lightning_train)


def test_defaults_mean_not_given():
    opts = parse("")
    assert (opts.devices, opts.accelerator, opts.precision, opts.strategy) == (None,) * 4
    assert (opts.monitor, opts.mode, opts.logger) == (None, None, "auto")
    assert opts.out == "lightning_run"
    assert opts.trainer_kwargs() == {} and opts.hardware_given() == {}
    trainer_fields = set(flags.TRAINER_ARGUMENTS) | set(flags.HARDWARE)
    assert all(getattr(opts, name) is None for name in trainer_fields)
    assert opts == flags.TrainFlags()


def test_hardware_given_is_normalized_and_apart_from_trainer_kwargs():
    opts = parse("--accelerator cuda --devices 0,1 --strategy ddp_notebook --precision bf16")
    assert opts.hardware_given() == {"accelerator": "gpu", "devices": "0,1",
                                     "strategy": "ddp_notebook", "precision": "bf16-mixed"}
    assert opts.trainer_kwargs() == {}
    assert parse("--precision 32").hardware_given() == {"precision": "32-true"}
    assert parse("--accelerator auto").hardware_given() == {"accelerator": "auto"}


def test_trainer_flags_map_to_trainer_arguments():
    opts = parse("--max-epochs 3 --min-epochs 1 --max-steps 100 --min-steps 5 "
                 "--limit-train-batches 10 --limit-val-batches 0.25 --val-check-interval 0.5 "
                 "--check-val-every-n-epoch 2 --num-sanity-val-steps 0 --gradient-clip-val 1.5 "
                 "--accumulate-grad-batches 4 --deterministic --benchmark --fast-dev-run 3")
    assert opts.trainer_kwargs() == {
        "max_epochs": 3, "min_epochs": 1, "max_steps": 100, "min_steps": 5,
        "limit_train_batches": 10, "limit_val_batches": 0.25, "val_check_interval": 0.5,
        "check_val_every_n_epoch": 2, "num_sanity_val_steps": 0, "gradient_clip_val": 1.5,
        "accumulate_grad_batches": 4, "deterministic": True, "benchmark": True,
        "fast_dev_run": 3,
    }
    assert isinstance(opts.limit_train_batches, int)
    assert isinstance(opts.limit_val_batches, float)


def test_more_trainer_arguments_as_flags():
    opts = parse("--log-every-n-steps 5 --overfit-batches 0.1 --detect-anomaly "
                 "--gradient-clip-algorithm value --reload-dataloaders-every-n-epochs 0 "
                 "--sync-batchnorm --profiler simple --barebones --no-inference-mode "
                 "--no-distributed-sampler --limit-test-batches 3 --limit-predict-batches 0.5")
    assert opts.trainer_kwargs() == {
        "log_every_n_steps": 5, "overfit_batches": 0.1, "detect_anomaly": True,
        "gradient_clip_algorithm": "value", "reload_dataloaders_every_n_epochs": 0,
        "sync_batchnorm": True, "profiler": "simple", "barebones": True,
        "inference_mode": False, "use_distributed_sampler": False, "limit_test_batches": 3,
        "limit_predict_batches": 0.5,
    }
    assert parse("--overfit-batches 2").overfit_batches == 2
    assert parse("--max-steps -1").trainer_kwargs() == {"max_steps": -1}  # given, so kept


def test_monitor_mode_and_logger():
    opts = parse("--monitor val_loss --mode MAX --logger tensorboard")
    assert (opts.monitor, opts.mode, opts.logger) == ("val_loss", "max", "tensorboard")
    assert parse("--monitor val_acc").mode is None
    assert opts.trainer_kwargs() == {}  # the magic's checkpoint and logger, not Trainer arguments


@pytest.mark.parametrize("line, value", [
    ('--ckpt-dir "my runs/a b"', "my runs/a b"), ("--ckpt-dir 'my runs'", "my runs"),
    (r"--ckpt-dir my\ runs", "my runs"), ('--ckpt-dir="quoted=yes"', "quoted=yes"),
])
def test_quoted_values_are_read_as_a_shell_reads_them(line, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse(line).ckpt_dir == value
    assert not os.listdir(tmp_path)  # checked, not created


@pytest.mark.parametrize("line, flag", [
    ("--ckpt-dir ''", "--ckpt-dir"), ('--model ""', "--model"), ("--export '  '", "--export"),
    ("--out=", "--out"), ("--devices ''", "--devices"), ("--strategy ''", "--strategy"),
    ("--monitor ''", "--monitor"), ("--fast-dev-run=", "--fast-dev-run"),
])
def test_an_empty_value_is_refused_naming_the_flag(line, flag):
    with pytest.raises(UsageError, match=f"^{flag} needs a value, got an empty one"):
        parse(line)


@pytest.mark.parametrize("given, suggested", [
    ("--epochs 3", "--max-epochs"), ("--max_epochs 3", "--max-epochs"),
    ("--precison 16", "--precision"), ("--ckpt_dir x", "--ckpt-dir"),
    ("--clip-val 1", "--gradient-clip-val"),
])
def test_an_unknown_flag_gets_the_nearest_declared_one(given, suggested):
    with pytest.raises(UsageError) as info:
        parse(given)
    message = str(info.value)
    assert f"did you mean {suggested}?" in message and "\n" not in message
    assert given.split()[0] in message


@pytest.mark.parametrize("name, words", [
    ("print", ["built-in print", "--out print_run"]),
    ("__builtins__", ["dunder", "--out builtins_run"]),
    ("__name__", ["dunder"]), ("get_ipython", ["IPython's own"]), ("In", ["IPython's own"]),
    ("Out", ["IPython's own"]), ("exit", ["IPython's own"]), ("quit", ["IPython's own"]),
    ("_", ["IPython's own", "--out lightning_run"]), ("__", ["IPython's own"]),
    ("_ih", ["IPython's own"]), ("_oh", ["IPython's own"]), ("_dh", ["IPython's own"]),
    ("_i3", ["IPython's own"]), ("len", ["built-in len"]), ("Exception", ["built-in"]),
])
def test_out_names_that_would_break_the_notebook_are_refused(name, words):
    with pytest.raises(UsageError) as info:
        parse(f"--out {name}")
    message = str(info.value)
    assert message.startswith(f"--out {name!r}") and "choose another name" in message
    for word in words:
        assert word in message, (word, message)


def test_ordinary_out_names_are_kept():
    assert parse("--out run_1").out == "run_1" and parse("--out _private").out == "_private"


def test_ckpt_dir_must_be_a_writable_directory(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert parse(f"--ckpt-dir {tmp_path}").ckpt_dir == str(tmp_path)
    assert parse(f"--ckpt-dir {tmp_path}/new/deeper").ckpt_dir == f"{tmp_path}/new/deeper"
    assert not (tmp_path / "new").exists()
    assert parse("--ckpt-dir /dev/shm/lm-runs").ckpt_dir == "/dev/shm/lm-runs"
    cases = {
        str(a_file): "is a file, not a directory",
        f"{a_file}/below": f"is under {str(a_file)!r}, which is a file",
        "/proc/x": "is under /proc", "/proc": "is under /proc", "/dev/null": "is under /dev",
        "/sys/kernel/x": "is under /sys",
        str(tmp_path / ("n" * 300)): "longer than the 255",
        str(tmp_path) + "/d" * 2100: "too long for the files written inside it",
    }
    link = tmp_path / "to-proc"
    link.symlink_to("/proc/self")
    cases[f"{link}/x"] = "is under /proc"
    for value, words in cases.items():
        with pytest.raises(UsageError) as info:
            parse(f"--ckpt-dir {value}")
        message = str(info.value)
        assert message.startswith("--ckpt-dir ") and words in message and "\n" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any directory, whatever "
                                              "its mode, so there is no unwritable one to try")
def test_ckpt_dir_in_a_directory_without_write_permission(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(UsageError, match="cannot be written: .* is read-only"):
        parse(f"--ckpt-dir {locked}/run")


def test_export_path_needs_a_writable_folder(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert parse(f"--export {tmp_path}/jobs/train.py").export == f"{tmp_path}/jobs/train.py"
    for value, words in {"/proc/x": "is under /proc", "/dev/null": "is under /dev",
                         f"{a_file}/train.py": "which is a file"}.items():
        with pytest.raises(UsageError) as info:
            parse(f"--export {value}")
        assert str(info.value).startswith("--export ") and words in str(info.value)


def test_max_time_and_timeout_are_bounded():
    assert parse("--max-time 365:00:00:00").max_time == "365:00:00:00"
    for line in ("--max-time 1e18", "--max-time 366:00:00:00", "--max-time 1e999",
                 "--timeout 1e300", "--timeout inf"):
        with pytest.raises(UsageError, match=line.split()[0]):
            parse(line)


def test_cpu_processes_are_capped_at_a_multiple_of_the_cores():
    cores = len(os.sched_getaffinity(0))
    cap = 4 * cores
    assert parse(f"--accelerator cpu --devices {cap}").devices == str(cap)
    for line in (f"--accelerator cpu --devices {cap + 1}", "--accelerator cpu --devices 99999999999",
                 "--devices 500000"):
        with pytest.raises(UsageError) as info:
            parse(line)
        message = str(info.value)
        assert f"{cores} core" in message and f"past {cap} (4 per core)" in message
    assert parse("--accelerator gpu --devices 9").devices == "9"  # GPUs: hardware's to check


@pytest.mark.parametrize("value", ["⁵", "٣", "２", "0,¹"])
def test_devices_in_non_ascii_digits_are_a_usage_error(value):
    with pytest.raises(UsageError, match="--devices .* ASCII"):
        parse(f"--devices {value}")


@pytest.mark.parametrize("flag", ["--max-epochs", "--seed", "--accumulate-grad-batches"])
def test_whole_numbers_are_ascii_digits(flag):
    with pytest.raises(UsageError, match=f"{flag} '٣' is not a whole number"):
        parse(f"{flag} ٣")


@pytest.mark.parametrize("given, expected", [
    ("90", "00:00:01:30"), ("01:30:00", "00:01:30:00"), ("2:00:00:00", "02:00:00:00"),
    ("0.5", "00:00:00:01"),
])
def test_max_time_becomes_lightnings_format(given, expected):
    assert parse(f"--max-time {given}").trainer_kwargs() == {"max_time": expected}


@pytest.mark.parametrize("given", ["0", "-5", "1:2", "soon", "01:-1:00"])
def test_max_time_rejections(given):
    with pytest.raises(UsageError, match="--max-time"):
        parse(f"--max-time {given}")


def test_fast_dev_run_without_value_is_true():
    assert parse("--fast-dev-run").fast_dev_run is True


@pytest.mark.parametrize("given, expected", [
    ("32", "32-true"), ("16-mixed", "16-mixed"), ("bf16-mixed", "bf16-mixed"),
    ("16-true", "16-true"), ("bf16-true", "bf16-true"), ("64", "64-true"), ("bf16", "bf16-mixed"),
])
def test_precision_values(given, expected):
    assert parse(f"--precision {given}").precision == expected


def test_other_flags():
    opts = parse("--seed 7 --ckpt-dir runs/a --resume last --out result --timeout 30 "
                 "--model net --data dm --val-data vl --progress none --check")
    assert (opts.seed, opts.ckpt_dir, opts.resume, opts.out, opts.timeout) == \
        (7, "runs/a", "last", "result", 30.0)
    assert (opts.model, opts.data, opts.val_data, opts.progress, opts.check) == \
        ("net", "dm", "vl", "none", True)


@pytest.mark.parametrize("line, words", [
    ("--precision 17", ["--precision", "'17'", "bf16-mixed"]),
    ("--accelerator tpu", ["--accelerator", "'tpu'", "cpu"]),
    ("--max-epochs two", ["--max-epochs", "'two'", "whole number"]),
    ("--max-epochs -5", ["--max-epochs", "-5", "-1"]),
    ("--max-steps 1.5", ["--max-steps", "'1.5'"]),
    ("--limit-train-batches 1.5", ["--limit-train-batches", "'1.5'", "fraction"]),
    ("--limit-val-batches -1", ["--limit-val-batches", "'-1'"]),
    ("--val-check-interval 0", ["--val-check-interval", "'0'"]),
    ("--check-val-every-n-epoch 0", ["--check-val-every-n-epoch", "0", "1"]),
    ("--gradient-clip-val abc", ["--gradient-clip-val", "'abc'"]),
    ("--gradient-clip-val nan", ["--gradient-clip-val", "'nan'"]),
    ("--accumulate-grad-batches 0", ["--accumulate-grad-batches", "0"]),
    ("--seed -1", ["--seed", "-1"]),
    ("--timeout 0", ["--timeout", "'0'", "greater than 0"]),
    ("--out 1abc", ["--out", "'1abc'", "variable name"]),
    ("--model class", ["--model", "'class'"]),
    ("--progress fancy", ["--progress", "'fancy'", "live"]),
    ("--num-nodes 2", ["--num-nodes", "--export"]),
    ("--min-epochs 5 --max-epochs 2", ["--min-epochs 5", "--max-epochs 2"]),
    ("--fast-dev-run 0", ["--fast-dev-run", "0"]),
    ("--no-such-flag", ["unrecognized", "--no-such-flag"]),
    ("stray words", ["unrecognized", "stray words", "--max-epochs 3"]),
    ('--ckpt-dir "unclosed', ["--ckpt-dir", "No closing quotation"]),
    ("--mode max", ["--mode max", "--monitor"]),
    ("--mode up --monitor m", ["--mode", "'up'", "min, max"]),
    ("--logger wandb", ["--logger", "'wandb'", "tensorboard"]),
    ("--profiler fancy", ["--profiler", "'fancy'", "simple"]),
    ("--gradient-clip-algorithm l2", ["--gradient-clip-algorithm", "'l2'", "norm"]),
    ("--log-every-n-steps 0", ["--log-every-n-steps", "0", "1"]),
    ("--reload-dataloaders-every-n-epochs -1", ["--reload-dataloaders-every-n-epochs", "-1"]),
    ("--overfit-batches 2.5", ["--overfit-batches", "'2.5'"]),
    ("--limit-test-batches x", ["--limit-test-batches", "'x'"]),
    ("--devices", ["--devices", "expected one argument"]),
    ("--check --export x.py", ["--check", "--export"]),
])
def test_rejections_name_flag_and_value(line, words):
    with pytest.raises(UsageError) as info:
        parse(line)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_help_is_generated_from_the_declarations(ip):
    doc = ip.find_cell_magic("lightning_train").__doc__
    for flag in ("--devices", "--accelerator", "--precision", "--strategy", "--max-epochs",
                 "--min-epochs", "--max-steps", "--min-steps", "--max-time",
                 "--limit-train-batches",
                 "--limit-val-batches", "--val-check-interval", "--check-val-every-n-epoch",
                 "--num-sanity-val-steps", "--gradient-clip-val", "--accumulate-grad-batches",
                 "--deterministic", "--benchmark", "--fast-dev-run", "--seed", "--ckpt-dir",
                 "--resume", "--out", "--model", "--data", "--val-data", "--timeout", "--check",
                 "--progress", "--export", "--num-nodes", "--monitor", "--mode", "--logger",
                 "--log-every-n-steps", "--overfit-batches", "--detect-anomaly",
                 "--gradient-clip-algorithm", "--reload-dataloaders-every-n-epochs",
                 "--sync-batchnorm", "--profiler", "--barebones", "--no-inference-mode",
                 "--no-distributed-sampler", "--limit-test-batches", "--limit-predict-batches"):
        assert flag in doc, flag
    assert "every GPU NVML sees" in " ".join(doc.split())


def test_help_via_question_mark(ip, capsys):
    ip.run_cell("%%lightning_train?")
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-epochs N" in text
    assert "every GPU NVML sees" in text
    # an example cell, as IPython's own magics have: a tutorial cell with a Trainer and test
    assert "Examples" in text and "trainer.fit(model, datamodule=dm)" in text
    assert 'trainer.test(model, datamodule=dm, ckpt_path="best")' in text


def test_background_and_no_wait():
    opts = parse("--background --no-wait")
    assert (opts.background, opts.no_wait) == (True, True)
    assert (parse("").background, parse("").no_wait) == (False, False)
    with pytest.raises(UsageError, match=r"^--no-wait is for --background runs: add "
                                         r"--background or drop it\.$"):
        parse("--no-wait")
    with pytest.raises(UsageError, match=r"^--background and --export do not go together"):
        parse("--background --export job.py")


def test_detach_goes_with_background():
    assert parse("--background --detach").detach and not parse("--background").detach
    with pytest.raises(UsageError, match=r"^--detach is for --background runs: add "
                                         r"--background or drop it\.$"):
        parse("--detach")


def test_a_value_given_to_a_flag_that_takes_none_says_to_write_it_alone():
    with pytest.raises(UsageError) as info:
        parse("--background=yes")
    assert str(info.value) == ("%%lightning_train: --background takes no value (it was given "
                               "'yes'): write --background alone.")
