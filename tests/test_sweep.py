"""vaecpp.sweep: Optuna trials over VAE hyper-parameters, shared through an SQLite study, and
through a PostgreSQL one (a throwaway server started for the test, as the workers of several
hosts would share one).

Tiny models (16 inputs, a few epochs) keep each trial at a fraction of a second.
"""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

import vaecpp
from vaecpp.sweep import PruningCallback, load_best, trial_threads

optuna = pytest.importorskip("optuna", reason="vaecpp.sweep needs Optuna (pip install optuna)")
from optuna.distributions import FloatDistribution  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)

DATA = """
import numpy as np
def data():
    rng = np.random.default_rng(0)
    p = np.where(rng.random((2, 16)) < 0.5, 0.9, 0.1)    # two binary patterns, noisy copies
    x = (rng.random((240, 16)) < p[rng.integers(0, 2, 240)]).astype(np.float32)
    return x[:200], x[200:]
"""
exec(DATA)  # defines data(), shared with the worker processes below


def run_sweep(tmp_path, space, **kwargs):
    x, x_val = data()
    options = dict(n_trials=2, directory=tmp_path / "sweep", epochs=2, batch_size=20, threads=1)
    options.update(kwargs)
    return vaecpp.sweep(space, x, validation_data=x_val, **options)


WORKER = DATA + """
import os, sys, time
import optuna
import vaecpp
optuna.logging.set_verbosity(optuna.logging.WARNING)
directory, n_trials, worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
storage = sys.argv[4] if len(sys.argv) > 4 else None  # default: directory/study.db (SQLite)
x, x_val = data()


class Rendezvous(vaecpp.callbacks.Callback):
    # Holds this worker's first trial until the other worker has started one, so that both run
    # trials however late one of them starts (imports take seconds on a busy machine, a trial a
    # fraction of one: a start barrier alone let one worker run all of them).
    waited = False

    def on_train_begin(self, logs=None):
        if Rendezvous.waited:
            return
        Rendezvous.waited = True
        open(f"{directory}.trial{worker}", "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(f"{directory}.trial{1 - worker}") and time.monotonic() < deadline:
            time.sleep(0.05)


space = {"hidden": [(8,), (16, 8)], "latent_dim": [1, 2], "seed": worker,
         "learning_rate": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True)}
vaecpp.sweep(space, x, validation_data=(x_val, x_val), n_trials=n_trials, directory=directory,
             storage=storage, epochs=2, batch_size=20, workers_per_host=2,
             callbacks=[Rendezvous()],
             sampler=optuna.samplers.RandomSampler(worker), pruner=optuna.pruners.NopPruner())
"""


@pytest.fixture
def postgresql_url():
    """A database on a PostgreSQL server of its own (trust authentication on 127.0.0.1, a free
    port, data in a temporary directory), stopped and removed afterwards. As root the server
    runs as the ``postgres`` user (PostgreSQL refuses root). Skips, saying why, without the
    server's programs or the psycopg driver."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    if initdb[-1] is None:
        pytest.skip("needs a PostgreSQL server (Debian: apt-get install postgresql)")
    pytest.importorskip("psycopg", reason="needs the psycopg driver (pip install '.[test]')")
    bindir = os.path.dirname(initdb[-1])
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = tempfile.mkdtemp(prefix="vaecpp-pg-")
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = os.path.join(root, "data"), os.path.join(root, "log")

    def run(*cmd):
        r = subprocess.run(as_user + list(cmd), capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)

    try:
        run(f"{bindir}/initdb", "-D", data, "-A", "trust", "-U", "vaecpp", "--no-sync")
        run(f"{bindir}/pg_ctl", "-D", data, "-l", log, "-w", "start", "-o",
            f"-k {root} -p {port} -c listen_addresses=127.0.0.1 -c fsync=off")
        try:
            run(f"{bindir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "vaecpp", "sweeps")
            yield f"postgresql://vaecpp@127.0.0.1:{port}/sweeps"
        finally:
            run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_share_one_study(tmp_path, request, database):
    """Two worker processes started together run the trials of one study, each trial once, in
    SQLite (the default: one machine) and in PostgreSQL (what workers on several hosts share)."""
    url = request.getfixturevalue("postgresql_url") if database == "postgresql" else None
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    directory, n_trials = tmp_path / "sweep", 4
    env = dict(os.environ, VAECPP_THREADS="1", PYTHONWARNINGS="error")
    workers = [subprocess.Popen([sys.executable, str(script), str(directory), str(n_trials), str(k)]
                                + ([url] if url else []),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
               for k in range(2)]
    for w in workers:
        out, _ = w.communicate(timeout=240)
        assert w.returncode == 0, out

    storage = optuna.storages.RDBStorage(url or f"sqlite:///{directory}/study.db")
    try:
        check_shared_study(optuna.load_study(study_name="vaecpp", storage=storage), directory,
                           n_trials, url)
    finally:
        storage.engine.dispose()  # (the database's connections closed before its server stops)


def check_shared_study(study, directory, n_trials, url):
    trials = study.get_trials()
    # Two workers that check the count at the same instant may each start one more trial.
    assert n_trials <= len(trials) <= n_trials + 1
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert {t.user_attrs["params"]["seed"] for t in trials} == {0, 1}  # both workers ran trials
    x, x_val = data()
    for t in trials:
        path = t.user_attrs["model_path"]
        assert path == str(directory / f"trial-{t.number:05d}.vae")
        assert t.user_attrs["threads"] == 1  # 2 cores or fewer // (1 job x 2 workers per host)
        vae, params = vaecpp.load_model(path), t.user_attrs["params"]
        assert vae.latent_dim == t.params["latent_dim"] == params["latent_dim"]
        assert vae.get_config()["seed"] == params["seed"]
        assert vae.count_params() == vaecpp.VAE(16, latent_dim=params["latent_dim"],
                                                hidden=tuple(params["hidden"])).count_params()
        assert len(vae.history.history["val_loss"]) == 2
        # The reported value is the saved model's validation loss.
        assert vae.evaluate(x_val, batch_size=20) == pytest.approx(t.value, rel=1e-6)
    best = min(trials, key=lambda t: t.value)
    assert study.best_trial.number == best.number
    assert set(study.best_params) == {"hidden", "latent_dim", "learning_rate"}
    assert study.best_params["hidden"] in ("(8,)", "(16, 8)")  # non-scalar choices by repr
    assert tuple(best.user_attrs["params"]["hidden"]) in ((8,), (16, 8))
    assert load_best(study).evaluate(x_val, batch_size=20) == pytest.approx(best.value, rel=1e-6)
    assert sorted(os.listdir(directory)) == sorted(
        ([] if url else ["study.db"]) + [f"trial-{t.number:05d}.vae" for t in trials])


def test_a_finished_study_runs_no_more_trials(tmp_path):
    study = run_sweep(tmp_path, {"latent_dim": [1, 2]}, n_trials=2)
    again = run_sweep(tmp_path, {"latent_dim": [1, 2]}, n_trials=2)
    assert again.study_name == study.study_name
    assert len(again.get_trials()) == 2
    more = run_sweep(tmp_path, {"latent_dim": [1, 2]}, n_trials=3)
    assert [t.number for t in more.get_trials()] == [0, 1, 2]


def test_storage_object_and_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    study = run_sweep(tmp_path, {"hidden": (8,)}, n_trials=1,
                      storage=optuna.storages.RDBStorage(url), study_name="mine")
    assert study.study_name == "mine"
    assert len(optuna.load_study(study_name="mine", storage=url).trials) == 1
    assert sorted(os.listdir(tmp_path / "sweep")) == ["trial-00000.vae"]  # no default study.db


def test_pruning_stops_a_trial_with_a_huge_learning_rate(tmp_path):
    x, x_val = data()
    untrained = vaecpp.VAE(16, latent_dim=2, hidden=(16,), seed=0).evaluate(x_val)
    # Prunes any trial whose validation loss after an epoch is worse than an untrained model's.
    pruner = optuna.pruners.ThresholdPruner(upper=untrained)
    # Adam at 3.0 stays finite here but ends its first epoch near 100 nats (untrained: about 15).
    space = {"hidden": (16,), "latent_dim": 2, "optimizer": "adam",
             "learning_rate": FloatDistribution(1e-3, 10.0, log=True)}
    study = optuna.create_study(study_name="vaecpp", direction="minimize",
                                storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.enqueue_trial({"learning_rate": 3.0})
    study.enqueue_trial({"learning_rate": 0.01})
    study = run_sweep(tmp_path, space, n_trials=2, epochs=6, pruner=pruner,
                      storage=f"sqlite:///{tmp_path / 'study.db'}")
    bad, good = study.get_trials()
    assert bad.params["learning_rate"] == 3.0 and good.params["learning_rate"] == 0.01
    assert bad.state == TrialState.PRUNED, bad.intermediate_values
    assert bad.user_attrs["pruned_epoch"] == 0 and list(bad.intermediate_values) == [0]
    assert bad.intermediate_values[0] > untrained
    assert "model_path" not in bad.user_attrs
    assert good.state == TrialState.COMPLETE
    assert list(good.intermediate_values) == list(range(6))
    assert max(good.intermediate_values.values()) < untrained
    assert os.listdir(tmp_path / "sweep") == [f"trial-{good.number:05d}.vae"]


def test_pruning_callback_stops_fit_after_the_epoch_and_raises(tmp_path):
    x, x_val = data()
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=0.0))  # prunes all
    trial = study.ask()
    seen = []
    vae = vaecpp.VAE(16, latent_dim=2, hidden=(8,), seed=0)
    cbs = [vaecpp.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(e)),
           PruningCallback(trial)]
    with pytest.raises(optuna.TrialPruned, match="pruned after epoch 1: val_loss"):
        vae.fit(x, epochs=5, batch_size=20, validation_data=x_val, verbose=0, callbacks=cbs)
    assert seen == [0] and cbs[1].pruned_epoch == 0
    assert len(vae.history.history["val_loss"]) == 1
    assert np.isfinite(vae.evaluate(x_val))  # the model stays usable
    # Told fit's epochs, it reports the last epoch but does not prune a finished trial.
    trial = study.ask()
    vae.fit(x, epochs=2, batch_size=20, validation_data=x_val, verbose=0,
            callbacks=[PruningCallback(trial, every=2, epochs=2)])
    assert study.trials[-1].intermediate_values.keys() == {1}
    with pytest.raises(ValueError, match="monitors 'val_loss'.*needs validation_data"):
        vae.fit(x, epochs=1, batch_size=20, verbose=0, callbacks=[PruningCallback(study.ask())])


def test_a_trial_pruned_by_the_callers_callback_ends_as_pruned(tmp_path):
    """A callback of the caller's that raises optuna.TrialPruned (not the sweep's pruner): the
    trial ends as pruned after the epochs it finished and the sweep goes on (a TypeError from
    the sweep's own bookkeeping stopped it)."""
    class PruneAtEpochTwo(vaecpp.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise optuna.TrialPruned("slow")
    study = run_sweep(tmp_path, {"hidden": (8,)}, n_trials=2, epochs=3,
                      callbacks=[PruneAtEpochTwo()])
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert [(t.user_attrs["pruned_epoch"], t.user_attrs["epochs_run"]) for t in trials] == \
        [(1, 2)] * 2


def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path):
    x, x_val = data()
    space = {"hidden": (8,), "learning_rate": [1e30, 1e-2], "optimizer": "sgd"}
    study = run_sweep(tmp_path, space, n_trials=2, sampler="grid", epochs=1)
    states = {t.params["learning_rate"]: t.state for t in study.get_trials()}
    assert states == {1e30: TrialState.FAIL, 1e-2: TrialState.COMPLETE}
    failed = study.get_trials(states=(TrialState.FAIL,))[0]
    assert "the loss became" in failed.user_attrs["diverged"]
    assert run_sweep(tmp_path, space, n_trials=2, sampler="grid").get_trials() == study.get_trials()


def test_grid_sampler_and_params_from_a_function(tmp_path):
    study = run_sweep(tmp_path, {"latent_dim": [1, 2], "activation": ["relu", "tanh"],
                                 "hidden": (8,), "epochs": 1}, n_trials=None, sampler="grid")
    trials = study.get_trials()
    assert sorted((t.params["latent_dim"], t.params["activation"]) for t in trials) == [
        (1, "relu"), (1, "tanh"), (2, "relu"), (2, "tanh")]
    assert all(t.user_attrs["epochs_run"] == 1 for t in trials)
    assert all(t.intermediate_values == {0: t.value} for t in trials)

    built = []

    def build(params):
        built.append(params)
        vae = vaecpp.VAE(16, latent_dim=1, hidden=(params["width"],), seed=0)
        return vae.compile(vaecpp.optimizers.Adam(1e-2))

    study = run_sweep(tmp_path / "f", lambda trial: {"width": trial.suggest_int("width", 4, 8),
                                                     "batch_size": 50},
                      build=build, n_trials=2, threads=2, epochs=5, report_every=2)
    assert [sorted(p) for p in built] == [["width"], ["width"]]  # batch_size went to fit
    assert all(t.user_attrs["threads"] == 2 for t in study.get_trials())
    assert all(sorted(t.intermediate_values) == [1, 3] for t in study.get_trials())  # epochs 2, 4
    assert vaecpp.load_model(study.best_trial.user_attrs["model_path"]).threads == 2


def test_trial_threads():
    assert trial_threads(1, 1, cores=8) == 8
    assert trial_threads(2, 1, cores=8) == 4
    assert trial_threads(3, 2, cores=8) == 1
    assert trial_threads(4, 4, cores=8) == 1
    assert trial_threads() >= 1
    with pytest.raises(ValueError, match="n_jobs must be >= 1"):
        trial_threads(0)


@pytest.mark.parametrize("space, kwargs, error, match", [
    ([1, 2], {}, TypeError, "space must be a dict"),
    ({"hiden": [(8,)]}, {}, ValueError, r"unknown hyper-parameter\(s\) \['hiden'\]"),
    ({"latent_dim": []}, {}, ValueError, "empty list of choices"),
    ({"hidden": [(8,), "(8,)"]}, {}, ValueError, "choices that look alike"),
    ({3: [1, 2]}, {}, TypeError, "space keys must be"),
    ({}, {"n_trials": 0}, ValueError, "n_trials must be >= 1"),
    ({}, {"n_trials": None}, TypeError, "n_trials must be an integer"),
    ({}, {"validation_data": None}, ValueError, "needs validation_data"),
    ({}, {"validation_data": np.zeros((4, 3), np.float32)}, ValueError, "samples of shape"),
    ({}, {"x": np.zeros(16, np.float32)}, ValueError, r"shape \(n, ...\)"),
    ({}, {"build": "vae"}, TypeError, "build must be a callable"),
    ({}, {"sampler": "random"}, ValueError, "sampler must be an Optuna sampler or 'grid'"),
    ({"learning_rate": FloatDistribution(1e-3, 1e-2)}, {"sampler": "grid"}, ValueError,
     "needs lists of choices"),
    ({}, {"threads": 0}, ValueError, "threads must be >= 1"),
    ({}, {"n_jobs": 1.5}, TypeError, "n_jobs must be an integer"),
    ({}, {"epochs": 0}, ValueError, "epochs must be >= 1"),
    ({}, {"report_every": 0}, ValueError, "report_every must be >= 1"),
    ({}, {"verbose": 3}, ValueError, "verbose must be 0, 1, 2 or 'auto'"),
    ({}, {"verbose": True}, ValueError, "verbose must be 0, 1, 2 or 'auto', got True"),
    ({}, {"storage": 5}, TypeError, "storage must be a database URL"),
    ({}, {"directory": None}, TypeError, "directory must be a path"),
])
def test_bad_arguments(tmp_path, space, kwargs, error, match):
    x, x_val = data()
    options = dict(x=x, validation_data=x_val, n_trials=1, directory=tmp_path / "sweep")
    options.update(kwargs)
    with pytest.raises(error, match=match):
        vaecpp.sweep(space, options.pop("x"), **options)


def test_bad_params_from_a_function_stop_the_sweep(tmp_path):
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['width'\]"):
        run_sweep(tmp_path, lambda trial: {"width": 8})
    with pytest.raises(TypeError, match="must return a dict"):
        run_sweep(tmp_path, lambda trial: [8])
    with pytest.raises(TypeError, match="must return a vaecpp.VAE"):
        run_sweep(tmp_path, {}, build=lambda params: None)
    # Trials that stopped the sweep do not count towards n_trials: the next run does them.
    study = run_sweep(tmp_path, {"hidden": (8,)}, n_trials=2)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL] * 3 + [TrialState.COMPLETE] * 2


def test_missing_optuna_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    x, x_val = data()
    with pytest.raises(ImportError, match=r'pip install "vaecpp\[sweep\]"'):
        vaecpp.sweep({}, x, validation_data=x_val, n_trials=1, directory=tmp_path)
    with pytest.raises(ImportError, match="needs Optuna"):
        PruningCallback(trial=None)


def test_import_vaecpp_does_not_import_optuna():
    code = "import sys, vaecpp; assert 'optuna' not in sys.modules; print(vaecpp.sweep.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "sweep", out.stderr
