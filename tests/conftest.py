import gzip
import os
import struct

import numpy as np
import pytest

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
MNIST_TEST = os.path.join(SHARED, "mnist", "t10k-images-idx3-ubyte.gz")


@pytest.fixture(scope="session")
def mnist_test_images():
    """The real MNIST test images as float32 in [0, 1], (10000, 784); skipped when absent."""
    if not os.path.exists(MNIST_TEST):
        pytest.skip(f"MNIST test set not found at {os.path.abspath(MNIST_TEST)}")
    with gzip.open(MNIST_TEST, "rb") as f:
        data = f.read()
    magic, n, rows, cols = struct.unpack(">IIII", data[:16])
    assert magic == 2051
    return (np.frombuffer(data[16:], np.uint8).reshape(n, rows * cols) / 255.0).astype(np.float32)


@pytest.fixture
def blobs():
    """Generated binary-ish data with structure: 4 prototypes plus noise, in [0, 1]."""
    rng = np.random.default_rng(0)
    protos = rng.random((4, 20)) > 0.5
    idx = rng.integers(0, 4, 400)
    x = np.where(rng.random((400, 20)) < 0.9, protos[idx], ~protos[idx]).astype(np.float64)
    return x


def pytest_addoption(parser):
    parser.addoption("--fuzz-cases", type=int, default=None,
                     help="cases per area for the mutation fuzzing of test_fuzz.py (default: the "
                          "CI budget of about a minute); e.g. --fuzz-cases 1500 for a long run")
