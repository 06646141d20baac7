"""The kernel's OpenMP pool is released before the ranks are forked, so that a rank's own pool
computes as the kernel's does (see lightning_magic/train/openmp.py): in a real forked child, the
main thread then finds no stale pool to wait for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.slow

CHILD = textwrap.dedent('''
    import os, sys, torch
    from lightning_magic.train.launch.openmp import release_pool

    torch.set_num_threads(2)
    torch.nn.functional.log_softmax(torch.randn(4096, 1000), 1).sum()  # the pool starts
    released = release_pool()
    pid = os.fork()
    if pid == 0:  # the child's main thread: the one that waits forever on a stale pool
        torch.nn.functional.log_softmax(torch.randn(4096, 1000), 1).sum()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    print("released", released, "child exit", os.waitstatus_to_exitcode(status))
''')


def test_a_child_forked_after_the_release_computes_on_its_main_thread():
    import lightning_magic

    root = os.path.dirname(os.path.dirname(lightning_magic.__file__))
    proc = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=root, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)  # a deadlock detector, not a speed check
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the parent and its hanging child
        proc.communicate()
        pytest.fail("the forked child waited forever for the parent's OpenMP threads")
    assert out.split() == ["released", "True", "child", "exit", "0"], err
