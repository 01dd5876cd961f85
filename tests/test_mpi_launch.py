"""The MPI launcher the data-parallel tests will use (tests/mpi_launch.py): ranks start, talk, and
a job that hangs is killed whole. Skips, saying why, without mpiexec or mpi4py."""

import os
import time
import uuid

import pytest

import mpi_launch
from mpi_launch import run_mpi

ALLREDUCE = """
import sys
import numpy as np
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = np.empty(3)
comm.Allreduce(np.full(3, comm.rank + 1.0), total, op=MPI.SUM)
# rank 0 prints every rank's line: the ranks' own prints may interleave in mpiexec's output
lines = comm.gather(f"rank {comm.rank} of {comm.size}: {total.tolist()} {sys.argv[1]}", root=0)
if comm.rank == 0:
    print(*lines, sep=chr(10), flush=True)
"""


@pytest.mark.parametrize("n", [2, 3])
def test_ranks_start_and_allreduce(n):
    out = run_mpi(n, ALLREDUCE, "hello", timeout=120)
    assert out.returncode == 0, out.stdout
    total = float(n * (n + 1) // 2)
    lines = sorted(line for line in out.stdout.splitlines() if line.startswith("rank "))
    assert lines == [f"rank {r} of {n}: {[total] * 3} hello" for r in range(n)], out.stdout


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="lists processes through /proc (Linux)")
def test_a_hanging_job_is_killed_whole():
    marker = f"vaecpp-mpi-hang-{uuid.uuid4().hex}"
    # Rank 1 waits for a message that never comes; rank 0 waits for rank 1 at the barrier.
    code = ("from mpi4py import MPI\ncomm = MPI.COMM_WORLD\n"
            "comm.recv(source=0) if comm.rank == 1 else comm.Barrier()\n")
    with pytest.raises(pytest.fail.Exception, match="did not finish within 5 s"):
        run_mpi(2, code, marker, timeout=5)
    deadline = time.monotonic() + 10
    while _processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_with(marker), "ranks outlived the killed job"


def _processes_with(marker):
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(pid)
        except OSError:
            pass
    return found


def test_skips_without_mpiexec(monkeypatch):
    monkeypatch.setattr(mpi_launch, "find_mpiexec", lambda: None)
    assert "pip install mpich mpi4py" in mpi_launch.skip_reason()
    with pytest.raises(pytest.skip.Exception, match="no mpiexec found"):
        run_mpi(2, "pass")
