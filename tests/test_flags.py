"""Flag parsing and validation: every rejection is a one-line UsageError naming the flag and value."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from lightning_magic import flags
from lightning_magic.magic import LightningMagics


def parse(line: str) -> flags.TrainFlags:
    return flags.parse(line, LightningMagics.lightning_train)


def test_defaults():
    opts = parse("")
    assert (opts.devices, opts.accelerator, opts.precision, opts.strategy) == \
        ("auto", "auto", "32-true", "auto")
    assert opts.out == "lightning_run"
    assert opts.trainer_kwargs() == {}


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
                 "--progress", "--export", "--num-nodes"):
        assert flag in doc, flag
    assert "every GPU NVML sees" in " ".join(doc.split())


def test_help_via_question_mark(ip, capsys):
    ip.run_cell("%%lightning_train?")
    text = " ".join(capsys.readouterr().out.split())
    assert "--max-epochs N" in text
    assert "every GPU NVML sees" in text
