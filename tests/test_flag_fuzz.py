"""Fuzzed ``%%lightning_train`` lines: whatever the line, parsing either gives TrainFlags or a
one-line UsageError that names a flag; no other exception ever escapes. And in a real shell, a
refused line leaves the cell body unrun and the shell working."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from lightning_magic.options import flags
from lightning_magic.magic import LightningMagics

PARSER = LightningMagics.lightning_train.parser
DECLARED = [o for a in PARSER._actions for o in a.option_strings]
EDGE_VALUES = ["", "''", '""', "0", "-1", "1e18", "1e999", "nan", "inf", "-inf", "1.5", "0.0",
               "⁵", "٣", "99999999999", "2**64", "1_000", "auto", "cpu", "gpu", "cuda", "0,1",
               "gpu:0", "/proc/x", "/dev/null", "/", "~", "a" * 300, "/a" * 2100, "x\x00y",
               "\u2028", "\x85", "\t", "'unclosed", '"unclosed', "\\", "--", "-", "=", "__x__",
               "print", "get_ipython", "_", "In", "12:00:00", "99:99:99:99", "1:2", "None"]


def line_strategy() -> st.SearchStrategy[str]:
    flag = st.sampled_from(DECLARED + ["--epochs", "--max", "--no", "-x", "--", "---devices"])
    value = st.one_of(st.sampled_from(EDGE_VALUES), st.text(max_size=12),
                      st.integers().map(str), st.floats().map(repr))
    quoted = value.map(lambda v: "'" + v.replace("'", "") + "'")
    word = st.one_of(flag, value, quoted, st.tuples(flag, value).map("=".join))
    return st.lists(word, max_size=6).map(" ".join).filter(lambda line: "\n" not in line
                                                          and "\r" not in line)


def check_line(line: str) -> None:
    try:
        flags.parse(line, LightningMagics.lightning_train)
    except UsageError as error:
        message = str(error)
        assert message and len(message.splitlines()) == 1, (line, message)
        assert re.search(r"--[a-z]", message), (line, message)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(line_strategy())
def test_any_line_parses_or_is_a_one_line_usage_error_naming_a_flag(line):
    check_line(line)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s))
def test_arbitrary_text_never_raises_anything_but_a_usage_error(line):
    check_line(line)


def test_every_edge_value_after_every_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for flag in DECLARED:
        for value in EDGE_VALUES:
            check_line(f"{flag} {value!r}" if " " in value else f"{flag} {value}")


def test_a_refused_line_leaves_the_body_unrun_and_the_shell_usable(ip):
    for line in ("--max-time 1e18", "--out __builtins__", "--devices ⁵", "--epochs 3",
                 "--ckpt-dir /proc/x", "--ckpt-dir ''"):
        result = ip.run_cell(f"%%lightning_train {line}\nbody_ran = True\n")
        assert isinstance(result.error_in_exec, UsageError), (line, result.error_in_exec)
        assert "body_ran" not in ip.user_ns, line
    assert ip.run_cell("after = 6 * 7").success and ip.user_ns["after"] == 42
    assert ip.run_cell("print(get_ipython() is not None)").success
