"""The benchmark scripts run end to end (smoke tests on tiny subsets; no timing is checked)."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_train.py")
DATA = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"


@pytest.mark.slow
def test_bench_train_quick_runs(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "RESULTS.md"
    cmd = [sys.executable, BENCH, "--quick", "--subset", "240", "--threads", "1",
           "--configs", "seed-flexible", "--gemm-n", "64", "--output", str(out)]
    if not os.path.exists(DATA):
        cmd.append("--synthetic")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    for heading in ("## Machine GEMM rate", "## Training", "## Where a vaecpp training step goes",
                    "## Inference"):
        assert heading in text
    assert "PyTorch FTZ s/epoch" in text and "CPU SIMD flags:" in text
    # a row on a busy machine reads "| 1 (busy) |"
    assert "| seed-flexible 784-200-2 | 100 | 1 |" in text or \
        "| seed-flexible 784-200-2 | 100 | 1 (busy) |" in text
    assert "| seed-flexible 784-200-2 | 1 |" in text


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_distributed_quick_runs(tmp_path):
    pytest.importorskip("mpi4py", reason="mpi4py is not installed (pip install 'vaecpp[mpi]')")
    bench = load_benchmark("bench_distributed")
    mpiexec = bench.find_mpiexec()
    if mpiexec is None:
        pytest.skip("no mpiexec found (pip install 'vaecpp[mpi]')")
    out = tmp_path / "RESULTS_distributed.md"
    cmd = [sys.executable, bench.__file__, "--quick", "--configs", "seed-flexible", "--subset",
           "400", "--compute-steps", "2", "--max-bytes", "65536", "--mpiexec", mpiexec,
           "--output", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    for heading in ("## 1 process x 2 threads vs 2 ranks x 1 thread",
                    "## All-reduce between 2 ranks on this machine", "## Projection to N machines"):
        assert heading in text
    assert "| 784-200-2, 100 | 315,988 (1.26 MB) |" in text
    assert "| 64 KB |" in text and "**Measured: latency" in text
    assert "| 784-200-2, 100 | 10 GbE (TCP) | " in text


@pytest.mark.slow
def test_bench_portable_runs(tmp_path):
    # both "builds" are this interpreter's: the script's plumbing, not a comparison
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_portable.py"),
           "--native", sys.executable, "--portable", sys.executable, "--configs", "seed-flexible",
           "--threads", "1", "--epochs", "2", "--rounds", "1", "--subset", "300"]
    if not os.path.exists(DATA):
        cmd.append("--synthetic")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "| seed-flexible 784-200-2 | 100 | 1 |" in proc.stdout
    assert "portable build: gemm" in proc.stdout


def test_adam_floor_builds_and_prints_its_table(tmp_path):
    """benchmarks/adam_floor.cpp (the divide/square-root floor of Adam's rule in RESULTS.md)
    compiles as the README says and prints its three rows."""
    import re
    import shutil
    flags = ""
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    if shutil.which("g++") is None or not (" avx2" in flags and " fma" in flags):
        pytest.skip("needs g++ and an x86-64 CPU with AVX2 + FMA")
    exe = tmp_path / "adam_floor"
    subprocess.run(["g++", "-O2", "-mavx2", "-mfma", os.path.join(ROOT, "benchmarks", "adam_floor.cpp"),
                    "-o", str(exe)], check=True, timeout=120)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, check=True).stdout
    rows = re.findall(r"^\| (sqrt and div \(Adam's\)|div only|sqrt only) \| (\d+\.\d+) \|$", out, re.M)
    assert [r[0] for r in rows] == ["sqrt and div (Adam's)", "div only", "sqrt only"], out
    assert all(float(r[1]) > 0 for r in rows)
