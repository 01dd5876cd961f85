"""Streams split over ranks, in one process: what each rank reads of a data source, a mapped source
or a generator (vaecpp.sources), and the engine's train_batch on one rank's share. The ranks
themselves run in tests/test_distributed.py."""

import numpy as np
import pytest

import vaecpp
from vaecpp import _core, sources
from vaecpp.sources import Stream


def rows(n, seed=0):
    return np.random.default_rng(seed).random((n, 3)).astype(np.float32)


class Source:
    """A data source over an array, in order; with ``shards=True`` it takes rank and size."""

    def __init__(self, x, shards):
        self.x, self.read = x, []
        if shards:
            self.batches = self._shares

    def __len__(self):
        return len(self.x)

    def batches(self, batch_size, shuffle=True, seed=0, epoch=0):
        return self._shares(batch_size)

    def _shares(self, batch_size, shuffle=True, seed=0, epoch=0, rank=0, size=1):
        for i in range(0, len(self.x), batch_size):
            lo, hi = sources.share_range(len(self.x[i:i + batch_size]), rank, size)
            self.read.append(hi - lo)
            yield self.x[i + lo:i + hi]


def shares_of(make, batch_size, size, steps=None):
    """Every rank's list of shares of one pass over ``make()``."""
    return [list(Stream(make(), batch_size, steps, 0, "x", "steps").epoch(0, False, r, size))
            for r in range(size)]


@pytest.mark.parametrize("shards", [True, False])
@pytest.mark.parametrize("mapped", [True, False])
def test_every_kind_of_source_gives_each_rank_its_share_of_each_batch(shards, mapped):
    """A source that takes rank/size reads only its share; one that does not is read whole and
    cut; map_batches maps the share (or the whole batch, then cuts it). The shares of the ranks,
    in rank order, make up the batch; an empty share is yielded, not skipped."""
    x = rows(9)
    made = []

    def make():
        made.append(Source(x, shards))
        return sources.map_batches(made[-1], lambda b: 2 * b) if mapped else made[-1]

    per_rank = shares_of(make, 4, 3)  # batches of 4, 4, 1
    assert sources.takes_shards(make()) == (shards or mapped)
    for k, whole in enumerate((x[0:4], x[4:8], x[8:9])):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in per_rank]),
                                      (2 if mapped else 1) * whole)
    assert [len(p[2]) for p in per_rank] == [0, 0, 1]
    assert [sum(s.read) for s in made[:3]] == ([2, 2, 5] if shards else [9, 9, 9])


def test_a_generator_is_read_whole_on_every_rank_and_cut():
    batches = [rows(5, 1), (rows(2, 2), "label"), rows(1, 3)]
    per_rank = shares_of(lambda: iter(batches), 99, 2, steps=3)
    assert [[len(s) for s in p] for p in per_rank] == [[2, 1, 0], [3, 1, 1]]
    np.testing.assert_array_equal(np.concatenate([per_rank[0][1], per_rank[1][1]]), batches[1][0])


def test_map_batches_leaves_an_empty_share_alone():
    seen = []
    mapped = sources.map_batches(Source(rows(1), True), lambda b: seen.append(len(b)) or b)
    assert [len(b) for b in mapped.batches(4, rank=0, size=2)] == [0]
    assert seen == []
    with pytest.raises(ValueError, match="rank and size"):
        list(mapped.batches(4, rank=2, size=2))


def model(**kw):
    vae = vaecpp.VAE(3, latent_dim=2, hidden=(8,), seed=1, threads=1, dropout=0.2, **kw)
    vae.compile("adam")
    return vae


def one_rank(a):
    """The all-reduce of a single rank: the sum is the buffer itself."""


def test_train_batch_on_a_single_rank_collective_is_train_batch():
    x = rows(6)
    plain, shared = model(), model()
    for k in range(3):
        a = plain._engine.train_batch(x, k)
        b = shared._engine.train_batch(x, k, (0, 1, one_rank), 0, len(x))
        assert b == pytest.approx(a, rel=1e-12)  # loss sums through (hi, lo) float32 pairs
    for wa, wb in zip(plain.get_weights(), shared.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_train_batch_interrupted_changes_nothing_and_raises():
    vae = model()
    before = [w.copy() for w in vae.get_weights()]
    with pytest.raises(_core.Interrupted):
        vae._engine.train_batch(rows(4), 0, (0, 1, one_rank), 0, 4, True)
    assert vae.step == 0
    for w, b in zip(vae.get_weights(), before):
        np.testing.assert_array_equal(w, b)


def test_train_batch_takes_an_empty_share_only_with_a_collective():
    vae = model()
    empty = np.zeros((0, 3), np.float32)
    with pytest.raises(ValueError, match="empty batch"):
        vae._engine.train_batch(empty, 0)
    sums = vae._engine.train_batch(empty, 0, (0, 1, one_rank), 0, 4)  # the other ranks' batch
    assert sums["n"] == 0 and sums["loss"] == 0.0 and vae.step == 1
    for first, total in ((-1, 4), (0, 0), (2, 5)):
        with pytest.raises(ValueError, match="first"):
            vae._engine.train_batch(rows(4), 0, (0, 1, one_rank), first, total)
