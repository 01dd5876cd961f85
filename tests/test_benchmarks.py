"""The benchmark script runs end to end (a smoke test on a tiny subset; no timing is checked)."""

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
