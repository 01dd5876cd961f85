"""Model files: round trip, resume, atomic writes and validation of bad files."""

import os
import zipfile

import numpy as np
import pytest

import vaecpp


@pytest.fixture
def trained(blobs):
    vae = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=5, likelihood="bernoulli")
    vae.compile(vaecpp.optimizers.Adam(2e-3))
    vae.fit(blobs, epochs=2, batch_size=32, verbose=0)
    return vae


def test_round_trip_identical_outputs(tmp_path, trained, blobs):
    path = tmp_path / "model.vae"
    trained.save(path)
    loaded = vaecpp.load_model(path)
    np.testing.assert_array_equal(loaded.encode(blobs), trained.encode(blobs))
    np.testing.assert_array_equal(loaded.decode(np.ones((3, 2))), trained.decode(np.ones((3, 2))))
    assert loaded.evaluate(blobs, return_dict=True) == trained.evaluate(blobs, return_dict=True)
    assert loaded.history.history == trained.history.history
    assert loaded.get_config() == trained.get_config()
    assert loaded.optimizer.get_config() == trained.optimizer.get_config()
    assert not [p for p in os.listdir(tmp_path) if p != "model.vae"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


def test_beta_schedule_saves_its_current_value(tmp_path, blobs):
    """A function cannot be saved; the schedule's value at save time is (it was saved as 1.0, and
    the loaded model evaluated differently). Setting the schedule again resumes it."""
    def schedule(epoch):
        return 0.25 * (epoch + 1)

    vae = vaecpp.VAE(20, hidden=(16,), seed=5, beta=schedule).compile("adam")
    assert vae.get_config()["beta"] == 0.25  # beta(0), before any training
    vae.fit(blobs, epochs=2, batch_size=32, verbose=0)
    assert vae.get_config()["beta"] == 0.5  # the last epoch's
    vae.save(tmp_path / "m.vae")
    loaded = vaecpp.load_model(tmp_path / "m.vae")
    assert loaded.beta == 0.5
    assert loaded.evaluate(blobs, return_dict=True) == vae.evaluate(blobs, return_dict=True)
    loaded.beta = schedule
    vae.fit(blobs, epochs=3, initial_epoch=2, batch_size=32, verbose=0)
    loaded.fit(blobs, epochs=3, initial_epoch=2, batch_size=32, verbose=0)
    assert loaded.history.history["beta"] == vae.history.history["beta"] == [0.25, 0.5, 0.75]


def test_resume_matches_uninterrupted_training(tmp_path, blobs):
    def fresh():
        return vaecpp.VAE(20, hidden=(16,), seed=9, dropout=0.1).compile("adam")
    straight = fresh()
    straight.fit(blobs, epochs=4, batch_size=32, verbose=0)
    first = fresh()
    first.fit(blobs, epochs=2, batch_size=32, verbose=0)
    first.save(tmp_path / "half.vae")
    resumed = vaecpp.load_model(tmp_path / "half.vae")
    h = resumed.fit(blobs, epochs=4, initial_epoch=2, batch_size=32, verbose=0)
    assert h.epoch == [2, 3]
    assert resumed.history.epoch == [0, 1, 2, 3]
    assert resumed.history.history["loss"] == straight.history.history["loss"]
    for a, b in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_weights_only(tmp_path, trained, blobs):
    other = vaecpp.VAE(20, latent_dim=2, hidden=(16,), seed=1)
    trained.save_weights(tmp_path / "w.npz")
    other.load_weights(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.encode(blobs), trained.encode(blobs))
    wrong = vaecpp.VAE(20, latent_dim=2, hidden=(8,), seed=1)
    with pytest.raises(ValueError, match="different architecture"):
        wrong.load_weights(tmp_path / "w.npz")
    with pytest.raises(ValueError, match="not a vaecpp.model file"):
        vaecpp.load_model(tmp_path / "w.npz")


def test_truncated_file(tmp_path, trained):
    path = tmp_path / "m.vae"
    trained.save(path)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 10):
        bad = tmp_path / f"cut{cut}.vae"
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not an intact vaecpp file"):
            vaecpp.load_model(bad)


def test_corrupted_bytes(tmp_path, trained):
    path = tmp_path / "m.vae"
    trained.save(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("params.npy")
    pos = info.header_offset + 30 + len(info.filename) + 200  # inside the params data
    data[pos] ^= 0xFF
    bad = tmp_path / "bad.vae"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not an intact vaecpp file"):
        vaecpp.load_model(bad)


def test_foreign_files(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not an intact vaecpp file"):
        vaecpp.load_model(text)
    npz = tmp_path / "other.npz"
    np.savez(npz, a=np.zeros(3))
    with pytest.raises(ValueError, match="not an intact vaecpp file"):
        vaecpp.load_model(npz)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not an intact vaecpp file"):
        vaecpp.load_model(pickled)
    with pytest.raises(FileNotFoundError):
        vaecpp.load_model(tmp_path / "missing.vae")


def test_model_and_weights_files_given_to_the_other_loader_are_named(tmp_path, trained):
    """A compiled model's file (with optimizer arrays) given to load_weights said "unexpected
    member 'opt_m.npy'"; both mix-ups now say which kind of file it is and what to call."""
    trained.save(tmp_path / "model.vae")
    trained.save_weights(tmp_path / "w.npz")
    before = trained.get_weights()
    with pytest.raises(ValueError, match=r"is a vaecpp.model file, not a vaecpp.weights file: "
                                         r"load it with vaecpp.load_model\(path\)"):
        trained.load_weights(tmp_path / "model.vae")
    with pytest.raises(ValueError, match=r"is a vaecpp.weights file, not a vaecpp.model file: "
                                         r".*load_weights\(path\)"):
        vaecpp.load_model(tmp_path / "w.npz")
    for kept, was in zip(trained.get_weights(), before):
        np.testing.assert_array_equal(kept, was)


@pytest.mark.skipif(not os.path.exists("/dev/null") or not hasattr(os, "mkfifo"),
                    reason="needs /dev/null and FIFOs (POSIX)")
def test_special_files_are_not_regular_files(tmp_path, trained):
    """/dev/null was "no such file"; a FIFO would have blocked the read."""
    for name in ("pipe.vae", "pipe.safetensors"):
        os.mkfifo(tmp_path / name)
    cases = [(vaecpp.load_model, "/dev/null", "character device"),
             (trained.load_weights, "/dev/null", "character device"),
             (vaecpp.load_model, str(tmp_path / "pipe.vae"), "FIFO"),
             (trained.load_weights, str(tmp_path / "pipe.safetensors"), "FIFO")]
    for load, path, kind in cases:
        with pytest.raises(ValueError, match=f"{path!r} is a {kind}, not a regular file"):
            load(path)


def test_wrong_sized_arrays_are_rejected(tmp_path, trained):
    import json
    path = tmp_path / "m.vae"
    trained.save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["params"] = arrays["params"][:-1]
    bad = tmp_path / "short.vae"
    with open(bad, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="params"):
        vaecpp.load_model(bad)
    header = json.loads(bytes(arrays["__vaecpp__"]).decode())
    header["version"] = 99
    arrays["__vaecpp__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    with open(bad, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(ValueError, match="version"):
        vaecpp.load_model(bad)


def test_failed_save_leaves_old_file_intact(tmp_path, trained, monkeypatch):
    path = tmp_path / "m.vae"
    trained.save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        trained.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.vae"]
