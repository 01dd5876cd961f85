"""Data-parallel training over MPI: N ranks against one process, agreement on errors and stops.

Each test launches tests/mpi_worker.py's SCENARIO on N ranks through tests/mpi_launch.py (under a
timeout that kills the whole job: no rank may be left hanging in a collective) and compares what
the ranks wrote. Skips, saying why, where mpi4py or mpiexec is missing (``pip install
'vaecpp[mpi]'`` brings both).
"""

import collections
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import vaecpp
from mpi_launch import run_mpi, skip_reason

WORKER = pathlib.Path(__file__).with_name("mpi_worker.py")

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def launch(tmp_path, scenario, ranks, dtype="float32", timeout=180, setup=None):
    """Runs the worker's scenario on `ranks` ranks (``setup(out)`` first); what each rank
    wrote."""
    out = tmp_path / f"{scenario}-{ranks}"
    out.mkdir()
    if setup is not None:
        setup(out)
    r = run_mpi(ranks, WORKER.read_text(), scenario, out, dtype, timeout=timeout)
    errors = [p.read_text() for p in sorted(out.glob("rank*.txt"))]
    assert r.returncode == 0 and not errors, (r.stdout, errors)
    return [dict(np.load(out / f"rank{i}.npz")) for i in range(ranks)]


def data(n, d=24, seed=0, dtype="float32"):
    return (np.random.default_rng(seed).random((n, d)) > 0.5).astype(dtype)


def single_process(n, bs, dtype):
    """What one process computes with the same global batch (no communicator)."""
    x, x_val = data(n, dtype=dtype), data(60, seed=1, dtype=dtype)
    vae = vaecpp.VAE(24, latent_dim=3, hidden=(16,), dropout=0.25, seed=7, threads=1, dtype=dtype)
    vae.compile("adam")
    seen = []

    class EpochWeights(vaecpp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(np.concatenate([w.ravel() for w in self.model.get_weights()]))

    h = vae.fit(x, batch_size=bs, epochs=3, verbose=0, validation_data=x_val,
                callbacks=[EpochWeights()])
    return np.stack(seen), h.history, vae.evaluate(x_val, batch_size=16, return_dict=True)


@pytest.mark.parametrize("dtype,rtol", [("float32", 1e-5), ("float64", 1e-12)])
def test_two_ranks_give_the_weights_of_one_process(tmp_path, dtype, rtol):
    """3 epochs of Adam with shuffling and dropout, global batch 64 over 2 ranks."""
    ranks = launch(tmp_path, "exact", 2, dtype)
    weights, history, ev = single_process(400, 64, dtype)
    for r in ranks:  # every rank, after every epoch: the same weights as one process
        np.testing.assert_allclose(r["weights"], weights, rtol=rtol, atol=rtol * 1e-2)
        np.testing.assert_allclose(r["loss"], history["loss"], rtol=rtol)
        np.testing.assert_allclose(r["val_loss"], history["val_loss"], rtol=rtol)
        np.testing.assert_allclose(r["evaluate"], ev["loss"], rtol=rtol)
    for r in ranks[1:]:  # and bit for bit the same on every rank
        np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])
        np.testing.assert_array_equal(r["loss"], ranks[0]["loss"])


def test_three_ranks_with_an_uneven_last_batch(tmp_path):
    """203 samples in global batches of 50 over 3 ranks: shares of 16/17 rows and a last batch
    of 3 (one row per rank)."""
    ranks = launch(tmp_path, "uneven", 3, "float64")
    weights, history, _ = single_process(203, 50, "float64")
    for r in ranks:
        np.testing.assert_allclose(r["weights"], weights, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r["loss"], history["loss"], rtol=1e-12)
        np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])


def test_a_nan_on_one_rank_stops_every_rank_at_the_same_batch(tmp_path):
    ranks = launch(tmp_path, "nan", 2)
    for r in ranks:  # row 210 is in batch 7 (rows 192..223), in rank 1's half (208..223)
        assert "the loss became NaN at batch 7 of 8" in str(r["message"])
        assert int(r["step"]) == 6  # no update was applied for the bad batch
        np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])


@pytest.mark.parametrize("scenario", ["stop_epoch", "stop_batch"])
def test_stop_training_on_rank_zero_stops_every_rank(tmp_path, scenario):
    ranks = launch(tmp_path, scenario, 2)
    assert int(ranks[0]["epochs"]) < 5
    for r in ranks:
        assert int(r["epochs"]) == int(ranks[0]["epochs"])
        assert int(r["step"]) == int(ranks[0]["step"])
        np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])
    if scenario == "stop_epoch":
        assert int(ranks[0]["epochs"]) == 2


def test_an_interrupt_on_one_rank_stops_every_rank(tmp_path):
    ranks = launch(tmp_path, "interrupt", 2)
    assert str(ranks[1]["kind"]) == "KeyboardInterrupt"  # its own error
    assert str(ranks[0]["kind"]) == "Interrupted"         # a KeyboardInterrupt subclass
    assert int(ranks[0]["step"]) == int(ranks[1]["step"])
    assert int(ranks[0]["step"]) < 2 * 150
    np.testing.assert_array_equal(ranks[0]["weights"], ranks[1]["weights"])


def test_a_ctrl_c_inside_the_all_reduce_stops_every_rank(tmp_path):
    """SIGINT arriving while rank 1 runs the all-reduce callback is held back until the callback
    returns (a KeyboardInterrupt raised inside it would leave rank 0 waiting in the next one),
    then seen by the progress check and agreed by both ranks."""
    ranks = launch(tmp_path, "sigint_allreduce", 2, timeout=120)
    assert str(ranks[1]["kind"]) == "KeyboardInterrupt"
    assert str(ranks[0]["kind"]) == "Interrupted"
    assert int(ranks[0]["step"]) == int(ranks[1]["step"]) < 2 * 150
    np.testing.assert_array_equal(ranks[0]["weights"], ranks[1]["weights"])


# ---- streams: each rank reads its share of every global batch ----------------------------------
N_IMAGES = 22


def write_images(out):
    """OUT/images: N_IMAGES small PNGs of random colours."""
    from PIL import Image
    (out / "images").mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(out / "images" / f"img{i:02d}.png")


def expected_decodes(rank, ranks, bs, seed=7, epochs=2):
    """The files rank `rank` should decode: its share of each batch of the shuffled epochs, of
    the validation passes (batches of bs) and of evaluate's pass (batches of 4)."""
    names = [f"img{i:02d}.png" for i in range(N_IMAGES)]
    passes = [(np.random.default_rng([seed, e]).permutation(N_IMAGES), bs) for e in range(epochs)]
    passes += [(np.arange(N_IMAGES), bs)] * epochs + [(np.arange(N_IMAGES), 4)]
    seen = collections.Counter()
    for order, b in passes:
        for i in range(0, N_IMAGES, b):
            chunk = order[i:i + b]
            lo, hi = len(chunk) * rank // ranks, len(chunk) * (rank + 1) // ranks
            seen.update(names[j] for j in chunk[lo:hi])
    return seen


def assert_same_training(ranks, one, rtol):
    """Every rank: the weights after each epoch, losses and evaluate of one process; and the same
    weights, bit for bit, on every rank."""
    for r in ranks:
        np.testing.assert_allclose(r["weights"], one["weights"], rtol=rtol, atol=rtol * 1e-2)
        for key in ("loss", "val_loss", "evaluate"):
            np.testing.assert_allclose(r[key], one[key], rtol=rtol)
        np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])


@pytest.mark.parametrize("scenario,n,bs,dtype,rtol", [
    ("folder2", 2, 7, "float32", 1e-5),     # batches 7, 7, 7, 1: rank 0's last share is empty
    ("folder3", 3, 10, "float64", 1e-12),   # batches 10, 10, 2: shares 3/3/4 and 0/1/1
])
def test_an_image_folder_stream_on_n_ranks_gives_one_process(tmp_path, scenario, n, bs, dtype,
                                                             rtol):
    """2 epochs on a shuffled image folder stream with a sharded validation stream (through
    map_batches) and evaluate; each rank decodes only the files of its shares."""
    ranks = launch(tmp_path, scenario, n, dtype, setup=write_images)
    one = launch(tmp_path, scenario, 1, dtype, setup=write_images)[0]
    assert_same_training(ranks, one, rtol)
    for i, r in enumerate(ranks):
        assert collections.Counter(r["decoded"].tolist()) == expected_decodes(i, n, bs)
    assert collections.Counter(one["decoded"].tolist()) == expected_decodes(0, 1, bs)


@pytest.mark.parametrize("scenario", ["generator", "ragged"])
def test_other_streams_on_two_ranks_give_one_process(tmp_path, scenario):
    """generator: a generator (batches of 1 to 16 rows) read whole on every rank, validated on a
    data source without rank/size; ragged: a source giving each rank its own rows, rank 1's
    running dry after 2 of 4 batches (it then adds 0 rows)."""
    ranks = launch(tmp_path, scenario, 2, "float64")
    one = launch(tmp_path, scenario, 1, "float64")[0]
    assert_same_training(ranks, one, 1e-12)
    assert int(ranks[0]["step"]) == int(one["step"]) == (10 if scenario == "generator" else 8)


def test_stop_training_on_rank_zero_stops_every_rank_in_a_stream(tmp_path):
    ranks = launch(tmp_path, "stop_stream", 2)
    for r in ranks:
        assert int(r["step"]) == 3 and len(r["loss"]) == 1
        np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])


@pytest.mark.parametrize("scenario,kinds,message", [
    # a loss that overflows on rank 1's share: the all-reduced loss, the same error everywhere
    ("inf_stream", ["FloatingPointError"] * 2, "the loss became (NaN|inf) at batch 4;"),
    # NaN in rank 1's share: its check fails there, the other rank hears of it and stops too
    ("nan_stream", ["RuntimeError", "ValueError"], None),
    # Ctrl-C on rank 1 after batch 2, or before batch 3 (the engine's word then)
    ("interrupt_end", ["Interrupted", "KeyboardInterrupt"], None),
    ("interrupt_begin", ["Interrupted", "KeyboardInterrupt"], None),
])
def test_a_failure_on_one_rank_stops_every_rank_in_a_stream(tmp_path, scenario, kinds, message):
    """Nobody hangs (launch's timeout kills the job) and every rank stops after the same batch."""
    ranks = launch(tmp_path, scenario, 2, timeout=120)
    assert [str(r["kind"]) for r in ranks] == kinds
    steps = 3 if scenario in ("inf_stream", "nan_stream") else 2
    for r in ranks:
        assert int(r["step"]) == steps
        if message:
            assert re.search(message, str(r["message"]))
        np.testing.assert_array_equal(r["weights"], ranks[0]["weights"])
    if scenario == "nan_stream":
        assert "batch 4 of x contains NaN" in str(ranks[1]["message"])
        assert "rank 1 stopped with an error before batch 4" in str(ranks[0]["message"])


@pytest.mark.parametrize("hook,failing,steps", [
    ("on_epoch_end", 0, 20),     # after epoch 2's 10 steps
    ("on_epoch_begin", 1, 10),   # before epoch 2's first batch
    ("on_test_end", 1, 20),      # after epoch 2's validation
])
def test_an_error_outside_the_batches_on_one_rank_stops_every_rank(tmp_path, hook, failing, steps):
    """A callback raising on one rank between batches (a checkpoint's full disk, say) ends fit on
    every rank at the same point, no rank left waiting in a collective (launch's timeout): the
    failing rank raises its own error, the others a RuntimeError naming it."""
    ranks = launch(tmp_path, f"fail_{hook}_{failing}", 2, timeout=120)
    for r, got in enumerate(ranks):
        if r == failing:
            assert str(got["kind"]) == "ValueError"
            assert str(got["message"]) == f"{hook} failed on rank {r}"
        else:
            assert str(got["kind"]) == "RuntimeError"
            assert f"rank {failing} stopped with an error" in str(got["message"])
        assert int(got["step"]) == steps
        np.testing.assert_array_equal(got["weights"], ranks[0]["weights"])


@pytest.mark.parametrize("what, named", [
    ("initial_epoch", "initial_epoch"),  # rank 1 trained one epoch, rank 0 waited: a hang
    ("hidden", "the model's configuration"),  # a raw MPI error from the weights' broadcast
    ("optimizer", "the optimizer"),
    ("validation", r"validation data \(its kind and number of samples\)"),  # was: the seed differs
    ("validation_freq", r"the validated epochs \(validation_freq\)"),
])
def test_settings_that_differ_between_ranks_are_named_on_every_rank(tmp_path, what, named):
    """Every rank of fit(distributed=comm) checks, in one collective, what all must pass alike;
    a difference is a ValueError naming it on every rank, before any step."""
    out = launch(tmp_path, f"mismatch_{what}", 2)
    for r in out:
        assert re.match(f"distributed: {named} differs between ranks .* on rank 0, .* on rank 1",
                        str(r["message"])), r["message"]
        assert r["step"] == 0
    assert out[0]["message"] == out[1]["message"]


def test_ranks_with_streams_of_their_own_lengths_train_together(tmp_path):
    """A stream may give each rank its own rows, as many batches as it has: the ranks agree on
    its kind only, and the rank that runs dry takes empty shares (4 global steps here, where
    rank 1's source has 2 batches of shares)."""
    out = launch(tmp_path, "sources_of_their_own", 2)
    assert [int(r["step"]) for r in out] == [4, 4]
    np.testing.assert_array_equal(out[0]["loss"], out[1]["loss"])


def test_one_rank_is_training_without_distributed():
    """A communicator of one rank (MPI's singleton start, no mpiexec) trains bit for bit as no
    communicator at all; run in a subprocess so that MPI starts and ends there."""
    code = """
import numpy as np, vaecpp
from mpi4py import MPI
x = (np.random.default_rng(0).random((300, 24)) > 0.5).astype("float32")
out = []
for comm in (None, MPI.COMM_WORLD):
    vae = vaecpp.VAE(24, latent_dim=3, hidden=(16,), dropout=0.25, seed=7, threads=1)
    vae.compile("adam")
    h = vae.fit(x, batch_size=32, epochs=2, verbose=0, distributed=comm)
    out.append((h.history["loss"], [w.copy() for w in vae.get_weights()]))
assert out[0][0] == out[1][0]
assert all(np.array_equal(a, b) for a, b in zip(out[0][1], out[1][1]))
print("same")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "same" in r.stdout, r.stderr


def test_distributed_needs_a_communicator_and_arrays():
    vae = vaecpp.VAE(24, latent_dim=2, hidden=(8,), seed=0)
    with pytest.raises(TypeError, match="mpi4py communicator"):
        vae.fit(data(64), epochs=1, verbose=0, distributed="world")
