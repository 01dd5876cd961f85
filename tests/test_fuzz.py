"""The fuzz suite (issue 14): property-based tests of the public API (hypothesis) and mutation
fuzzing of model files, IDX, MATLAB and image files, each case in its own forked process under an
address-space limit and a timeout (see fuzz_cases.py).

The default counts run in about a minute; ``pytest tests/test_fuzz.py --fuzz-cases N`` runs N
cases per area and prints the table of outcomes (docs/reliability.md has a long run's).
"""

import collections
import json
import math
import os
import resource
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vaecpp
from vaecpp import _file_checks, _limits

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import fuzz_cases  # noqa: E402

SEED = 20261201
CI_CASES = {"model": 60, "idx": 60, "mat": 60, "image": 60}
ADDRESS_SPACE = 6 << 30  # bytes: the worker's imports, plus far less than any bomb inflates to


def _limit_address_space():
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_area(area, count, seed=SEED):
    """Runs ``count`` cases of ``area`` in a worker process; returns their result dicts."""
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "fuzz_cases.py"), area, str(seed), "0", str(count)],
        capture_output=True, text=True, preexec_fn=_limit_address_space,
        timeout=60 + count * fuzz_cases.CASE_TIMEOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == count, f"worker ended early (rc {proc.returncode}):\n{proc.stderr[-3000:]}"
    return results


def table(results):
    """Outcome counts per area, as in docs/reliability.md."""
    counts = collections.defaultdict(collections.Counter)
    for r in results:
        counts[r["area"]][r["outcome"]] += 1
        counts[r["area"]]["memory"] += not fuzz_cases.memory_ok(r)
        counts[r["area"]]["cases"] += 1
    cols = ["cases", "error", "ok", "wrong", "foreign", "crash", "hang", "memory"]
    lines = ["| area | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for area in sorted(counts):
        lines.append(f"| {area} | " + " | ".join(str(counts[area][c]) for c in cols) + " |")
    return "\n".join(lines)


@pytest.mark.parametrize("area", fuzz_cases.AREAS)
def test_mutated_files_fail_cleanly_or_load_correctly(area, request):
    count = request.config.getoption("--fuzz-cases") or CI_CASES[area]
    results = run_area(area, count)
    bad = [r for r in results if r["outcome"] not in ("ok", "error") or not fuzz_cases.memory_ok(r)]
    print("\n" + table(results))
    assert not bad, json.dumps(bad[:5], indent=1)
    assert {r["outcome"] for r in results} >= {"error"}


# ---- the architecture mirror against the engine -------------------------------------------------
_layers = st.one_of(
    st.builds(vaecpp.layers.Dense, st.integers(1, 6)),
    st.builds(vaecpp.layers.Activation, st.sampled_from(["relu", "tanh"])),
    st.builds(vaecpp.layers.Dropout, st.sampled_from([0.0, 0.5])),
    st.just(vaecpp.layers.Flatten()),
    st.builds(vaecpp.layers.Reshape, st.sampled_from([(4,), (2, 2, 1), (1, 4, 1), (3, 3, 2)])),
    st.builds(vaecpp.layers.Conv2D, st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
              st.sampled_from(["valid", "same"])),
    st.builds(vaecpp.layers.Conv2DTranspose, st.integers(1, 3), st.integers(1, 3),
              st.integers(1, 2), st.sampled_from(["valid", "same"])),
    st.builds(vaecpp.layers.MaxPool2D, st.integers(1, 2), st.sampled_from([None, 1, 2]),
              st.sampled_from(["valid", "same"])),
    st.builds(vaecpp.layers.BatchNorm),
    st.builds(vaecpp.layers.ChannelsToBlocks, st.integers(1, 2)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.sampled_from([(4,), (4, 4, 1), (5, 6, 2), (3, 3)]),
       encoder=st.lists(_layers, max_size=4), decoder=st.lists(_layers, max_size=4),
       latent=st.integers(1, 3), likelihood=st.sampled_from(["bernoulli", "gaussian"]))
def test_sizes_from_the_configuration_agree_with_the_engine(shape, encoder, decoder, latent,
                                                            likelihood):
    """What load_model checks a file against before building: the engine's own counts."""
    try:
        vae = vaecpp.VAE(shape, latent_dim=latent, encoder=encoder, decoder=decoder, seed=0,
                         threads=1, likelihood=likelihood)
    except ValueError:
        return  # an architecture the engine rejects: load_model rejects it through VAE too
    sizes = _file_checks.architecture_sizes(vae.get_config())
    assert sizes == (vae._core.num_params, vae._core.num_state)


# ---- the public API's arguments and arrays ------------------------------------------------------
VOCABULARY = (ValueError, TypeError)


def _clean(error):
    text = str(error)
    assert not any(t in text for t in fuzz_cases.PYBIND_TEXTS), text


@pytest.fixture(scope="module")
def small_vae():
    vae = vaecpp.VAE(6, hidden=(4,), latent_dim=2, seed=0, threads=1, likelihood="gaussian")
    return vae.compile("adam")


_dtypes = st.one_of(hnp.scalar_dtypes(), st.sampled_from(
    [np.dtype("U3"), np.dtype("S2"), np.dtype("M8[s]")]))
_arrays = st.one_of(
    hnp.arrays(_dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7)),
    st.sampled_from([np.zeros((3, 6), "V4"), np.full((2, 6), None, dtype=object),
                     np.full((2, 6), 2**70, dtype=object)]))
_floats = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, min_side=0,
                                                  max_side=7),
                     elements=st.floats(allow_nan=True, allow_infinity=True, width=64))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(x=st.one_of(_arrays, _floats, st.lists(st.floats(), max_size=8), st.none(), st.text()),
       method=st.sampled_from(["encode", "decode", "reconstruct", "evaluate", "posterior",
                               "gradients"]))
def test_arrays_of_any_shape_and_dtype(small_vae, x, method):
    """Inference methods answer every array with a finite result or ValueError / TypeError, or
    FloatingPointError where a loss or gradient overflows (e.g. pixels of 133 in a float32 model)."""
    try:
        with warnings.catch_warnings():  # float64 beyond float32's range: a RuntimeWarning from
            warnings.simplefilter("ignore", RuntimeWarning)  # the cast, then the finite check
            out = getattr(small_vae, method)(x)
    except VOCABULARY + (FloatingPointError,) as e:
        _clean(e)
        return
    values = out if isinstance(out, tuple) else (out,)
    for v in values:
        if isinstance(v, dict):
            assert all(math.isfinite(f) for f in v.values() if isinstance(f, float))
        elif isinstance(v, (list,)):
            assert all(np.isfinite(a).all() for a in v)
        else:
            assert np.isfinite(np.asarray(v)).all()


_ints = st.one_of(st.integers(-2**70, 2**70), st.sampled_from(
    [0, -1, 2**31 - 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64, 2**64 - 1]))
_anything = st.one_of(_ints, st.floats(), st.booleans(), st.none(), st.text(max_size=3),
                      st.lists(st.integers(-3, 3), max_size=3))


@settings(max_examples=300, deadline=None)
@given(value=_anything, bounds=st.sampled_from([(1, _limits.INT_MAX), (0, _limits.SEED_MAX),
                                                (1, _limits.MAX_THREADS)]))
def test_limits_answer_any_value_in_the_vocabulary(value, bounds):
    try:
        got = _limits.integer(value, "n", *bounds)
    except VOCABULARY as e:
        _clean(e)
        return
    assert isinstance(got, int) and bounds[0] <= got <= bounds[1]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_anything, name=st.sampled_from(["batch_size", "epochs", "initial_epoch"]))
def test_fit_integer_arguments(small_vae, value, name):
    """Any value, integers far beyond the engine's 32 and 64 bits included: a clean ValueError /
    TypeError, or a run (of one epoch at most: a valid ``epochs`` goes with the same
    ``initial_epoch``, so no epoch is trained)."""
    x = np.random.default_rng(0).random((8, 6))
    args = {"batch_size": {"epochs": 1, "batch_size": value},
            "epochs": {"epochs": value, "initial_epoch": value},
            "initial_epoch": {"epochs": 0, "initial_epoch": value}}[name]
    try:
        small_vae.fit(x, verbose=0, **args)
        if name == "batch_size":
            assert math.isfinite(small_vae.evaluate(x, batch_size=value, verbose=0))
    except VOCABULARY as e:
        _clean(e)
        if isinstance(value, int) and not isinstance(value, bool) and value > _limits.INT_MAX:
            assert isinstance(e, ValueError) and f"<= {_limits.INT_MAX}" in str(e), e


@settings(max_examples=100, deadline=None)
@given(value=_anything, name=st.sampled_from(["max_bytes", "item_shape"]))
def test_idx_reader_arguments(tmp_path_factory, value, name):
    from vaecpp import _idx
    path = tmp_path_factory.mktemp("idx") / "labels.idx"
    path.write_bytes(fuzz_cases.idx_file(np.arange(5, dtype=np.uint8)))
    try:
        got = _idx.read_idx(path, _idx.LABELS_MAGIC, **{name: value})
    except VOCABULARY as e:
        _clean(e)
        return
    assert np.array_equal(got, np.arange(5))
