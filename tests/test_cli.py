"""The ``vaecpp`` command (``python -m vaecpp``): exit codes, files written, one-line errors."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import vaecpp
from vaecpp.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
PNG = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")


@pytest.fixture
def env(tmp_path):
    """An offline environment: empty cache, downloads refused at once, one thread."""
    e = dict(os.environ)
    e.update(MPLBACKEND="Agg", VAECPP_CACHE=str(tmp_path / "cache"),
             VAECPP_MIRROR="http://127.0.0.1:9", VAECPP_THREADS="1", VAECPP_DATA="")
    return e


def run(args, env, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "vaecpp", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, **kwargs)


def limit_address_space(nbytes=4 << 30):
    """A ``preexec_fn`` giving the command at most ``nbytes`` of address space: a check that is
    missing then fails with a MemoryError instead of exhausting the machine."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))


def assert_one_line_error(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "error:" in lines[0]
    return lines[0]


def assert_png(path):
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG
    assert path.stat().st_size > 1000


def test_train_default_dataset_writes_model_and_figures(tmp_path, env):
    out = tmp_path / "run"
    result = run(["train", "--epochs", "2", "--hidden", "64", "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert "Epoch 2/2" in result.stdout  # the progress bar
    assert "scikit-learn digits: 1600 training and 197 validation" in result.stdout
    for name in ("loss", "latent", "reconstructions", "samples", "manifold"):
        assert_png(out / f"{name}.png")
        assert f"wrote {out / name}.png" in result.stdout
    vae = vaecpp.load_model(out / "model.vae")
    assert vae.input_shape == (8, 8) and vae.latent_dim == 2
    assert len(vae.history.epoch) == 2
    final = [line for line in result.stdout.splitlines() if line.startswith("after 2 epochs")]
    assert final and "val_loss" in final[0]
    z = vae.encode(np.zeros((1, 8, 8), np.float32))
    assert np.isfinite(z).all()


def test_train_options_reach_the_model(tmp_path, env):
    out = tmp_path / "run"
    result = run(["train", "--latent-dim", "3", "--hidden", "48,24", "--likelihood",
                  "continuous_bernoulli", "--epochs", "1", "--batch-size", "64", "--seed", "7",
                  "--limit", "300", "--quiet", "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    assert "Epoch" not in result.stdout  # --quiet: no progress bar
    assert "300 training" in result.stdout
    vae = vaecpp.load_model(out / "model.vae")
    config = vae.get_config()
    assert vae.latent_dim == 3 and vae.likelihood == "continuous_bernoulli"
    assert config["seed"] == 7 and config["threads"] == 1
    widths = [layer["args"]["units"] for layer in config["encoder"]]
    assert widths == [48, 24]
    assert not (out / "manifold.png").exists()  # only drawn for a 2-D latent space
    for name in ("loss", "latent", "reconstructions", "samples"):
        assert_png(out / f"{name}.png")


def test_train_image_folder(tmp_path, env):
    from PIL import Image

    folder = tmp_path / "faces"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        pixels = (rng.random((20, 24, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    out = tmp_path / "run"
    result = run(["train", "--dataset", str(folder), "--image-size", "16", "--hidden", "32",
                  "--epochs", "1", "--batch-size", "4", "--quiet", "--threads", "1",
                  "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    vae = vaecpp.load_model(out / "model.vae")
    assert vae.input_shape == (16, 16, 3)
    assert_png(out / "samples.png")
    assert_png(out / "manifold.png")


def test_image_size_beyond_memory_gives_one_line_and_exit_2(tmp_path, env):
    """One small PNG at --image-size 100000 (40 GB as float32): refused from the size before
    anything is decoded (the process used to be killed for memory; under a memory limit the
    error was "cannot read image ()")."""
    from PIL import Image

    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    result = run(["train", "--dataset", str(folder), "--image-size", "100000", "--quiet",
                  "--out", str(tmp_path / "run")], env, preexec_fn=limit_address_space())
    line = assert_one_line_error(result)
    assert "(1 image of 100000 x 100000 pixels) would need about" in line and "memory" in line
    assert not (tmp_path / "run").exists()


def train_on_shared_data(tmp_path, env, dataset, *options):
    """A one-epoch run on 300 samples of a data set in ../shared/data; returns (result, out)."""
    env["VAECPP_DATA"] = str(SHARED_DATA)
    out = tmp_path / "run"
    result = run(["train", "--dataset", dataset, "--limit", "300", "--epochs", "1", "--hidden", "64",
                  "--quiet", "--out", str(out), *options], env)
    assert result.returncode == 0, result.stderr
    return result, out


@pytest.mark.skipif(not (SHARED_DATA / "frey_rawface.mat").is_file(),
                    reason=f"Frey faces not found in {SHARED_DATA}")
def test_train_frey(tmp_path, env):
    result, out = train_on_shared_data(tmp_path, env, "frey", "--likelihood", "gaussian")
    assert "Frey faces: 300 training and 165 validation samples of shape (28, 20)" in result.stdout
    assert_png(out / "manifold.png")
    assert vaecpp.load_model(out / "model.vae").likelihood == "gaussian"


@pytest.mark.skipif(not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
                    reason=f"MNIST test set not found in {SHARED_DATA / 'mnist'}")
def test_train_mnist_falls_back_to_its_test_set_with_one_warning(tmp_path, env):
    data = tmp_path / "data"
    (data / "mnist").mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):  # no training set
        (data / "mnist" / name).symlink_to(SHARED_DATA / "mnist" / name)
    env["VAECPP_DATA"] = str(data)
    out = tmp_path / "run"
    result = run(["train", "--dataset", "mnist", "--no-download", "--limit", "300", "--epochs", "1",
                  "--hidden", "64", "--quiet", "--out", str(out)], env)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "warning:" in line]
    assert len(warning) == 1 and "MNIST test set" in warning[0], result.stderr
    assert "MNIST test set (training set unavailable): 300 training and 1000 validation" in (
        result.stdout)
    assert_png(out / "latent.png")


@pytest.mark.skipif(not (SHARED_DATA / "mnist" / "train-images-idx3-ubyte.gz").is_file(),
                    reason=f"MNIST training set not found in {SHARED_DATA / 'mnist'}")
def test_train_mnist_uses_the_training_set(tmp_path, env):
    result, out = train_on_shared_data(tmp_path, env, "mnist", "--no-download")
    assert "warning" not in result.stderr
    assert "MNIST: 300 training and 10000 validation" in result.stdout


def test_train_mnist_without_mnist_stops_instead_of_using_fashion_mnist(tmp_path, env):
    env["VAECPP_DATA"] = str(tmp_path / "empty")
    result = run(["train", "--dataset", "mnist", "--no-download", "--out", str(tmp_path / "run")],
                 env)
    line = assert_one_line_error(result)
    assert "MNIST" in line and "Fashion" not in line
    assert not (tmp_path / "run").exists()  # nothing trained


def test_version(env):
    result = run(["--version"], env)
    assert result.returncode == 0 and result.stdout.strip() == f"vaecpp {vaecpp.__version__}"


@pytest.mark.parametrize("args", [
    ["train", "--epochs", "0"],
    ["train", "--epochs", "many"],
    ["train", "--batch-size", "-5"],
    ["train", "--latent-dim", "0"],
    ["train", "--hidden", "512,abc"],
    ["train", "--hidden", "0"],
    ["train", "--likelihood", "poisson"],
    ["train", "--image-size", "64x"],
    ["train", "--learning-rate", "nan"],
    ["train", "--no-such-option"],
    ["train", "--dataset", "no-such-dataset-or-folder"],
    ["frobnicate"],
    [],
], ids=lambda a: " ".join(a) or "no-command")
def test_bad_options_give_one_line_and_exit_2(args, env, tmp_path):
    result = run(args + ["--out", str(tmp_path / "run")] if args[:1] == ["train"] else args, env)
    assert_one_line_error(result)
    assert not (tmp_path / "run").exists()


def test_missing_data_gives_one_line_and_exit_2(tmp_path, env):
    env["VAECPP_DATA"] = str(tmp_path / "empty")
    result = run(["train", "--dataset", "frey", "--no-download", "--out", str(tmp_path / "run")],
                 env)
    line = assert_one_line_error(result)
    assert "frey_rawface.mat not found" in line


def test_unusable_out_gives_one_line_and_exit_2(tmp_path, env):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    line = assert_one_line_error(run(["train", "--out", str(blocker / "run")], env))
    assert "--out" in line


@pytest.mark.parametrize("taken", ["model.vae", "loss.png", "manifold.png"])
def test_out_whose_file_names_are_taken_stops_before_training(tmp_path, env, taken):
    """A folder where the run will write one of its files (created by hand here): one line,
    exit 2, before any training (it used to train to the end, then die with a traceback)."""
    out = tmp_path / "run"
    (out / taken).mkdir(parents=True)
    result = run(["train", "--epochs", "1", "--hidden", "4", "--out", str(out)], env)
    line = assert_one_line_error(result)
    assert f"cannot write {str(out / taken)!r}" in line
    assert result.stdout == ""  # nothing trained: the run's first line is not printed
    assert sorted(p.name for p in out.iterdir()) == [taken]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_out_where_no_file_can_be_created_stops_before_training(env):
    """/proc exists (so it passes for created) but takes no new files, even from root, who may
    write in any read-only folder."""
    result = run(["train", "--epochs", "1", "--hidden", "4", "--out", "/proc"], env)
    line = assert_one_line_error(result)
    assert "cannot write files in --out '/proc'" in line
    assert result.stdout == ""


def test_failed_download_ends_with_one_error_line(tmp_path, env):
    env["VAECPP_DATA"] = str(tmp_path / "empty")
    result = run(["train", "--dataset", "frey", "--out", str(tmp_path / "run")], env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vaecpp train: error: cannot load dataset 'frey'")


def test_info(env):
    result = run(["info"], env)
    assert result.returncode == 0, result.stderr
    info = vaecpp.build_info()
    assert f"vaecpp {vaecpp.__version__}" in result.stdout
    assert f"OpenMP: {'yes' if info['openmp'] else 'no'}" in result.stdout
    assert f"CUDA: {'yes' if info['cuda'] else 'no'}" in result.stdout
    assert "CPU features" in result.stdout
    for feature in info["simd"]:
        assert feature in result.stdout
    assert "1 (VAECPP_THREADS)" in result.stdout
    compiler = vaecpp._core.build_info()["compiler"]
    named = f"GCC {compiler}" if compiler[:1].isdigit() else compiler  # GCC's is a bare version
    assert info["compiler"] == named and f"compiler: {named}" in result.stdout


def test_help(env):
    result = run(["--help"], env)
    assert result.returncode == 0 and "train" in result.stdout and "info" in result.stdout
    result = run(["train", "--help"], env)
    assert result.returncode == 0
    for option in ("--dataset", "--latent-dim", "--hidden", "--likelihood", "--epochs",
                   "--batch-size", "--seed", "--out", "--threads"):
        assert option in result.stdout


def test_main_in_process(capsys):
    assert main(["info"]) == 0
    assert "vaecpp" in capsys.readouterr().out
    assert main(["train", "--epochs", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--epochs" in err


def test_console_script(env):
    script = pathlib.Path(sys.executable).with_name("vaecpp")
    if not script.is_file():
        pytest.skip(f"no installed vaecpp script beside {sys.executable}")
    result = subprocess.run([str(script), "info"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert result.returncode == 0 and "CPU features" in result.stdout
