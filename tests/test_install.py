"""``pip install .`` alone is enough for ``vaecpp train``: the command's default path imports
nothing beyond vaecpp's core dependencies (and theirs), a missing dependency is named in one line,
and a missing optional one names the extra that installs it.

The command runs in a subprocess whose import system refuses every installed module that a fresh
``pip install .`` would not have brought: those of the test extra (pytest, ipywidgets, mpi4py,
safetensors, ...) and anything else in this environment outside the dependency closure.
"""

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys

import pytest

import vaecpp

Requirement = pytest.importorskip("packaging.requirements").Requirement

# Runs ``python -m vaecpp ARGS`` with the top-level modules named in argv[1] (JSON) unimportable.
HIDING_RUNNER = r"""
import json, runpy, sys

class Hide:
    def __init__(self, names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Hide(frozenset(json.loads(sys.argv[1]))))
sys.argv = ["vaecpp"] + sys.argv[2:]
runpy.run_module("vaecpp", run_name="__main__", alter_sys=True)
"""


def _canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def _core_closure():
    """The distributions ``pip install .`` installs: vaecpp, its requirements outside any extra
    and, recursively, theirs (environment markers evaluated here)."""
    try:
        metadata.distribution("vaecpp")
    except metadata.PackageNotFoundError:
        pytest.skip("vaecpp is importable but not installed with pip: no requirements to read")
    closure, todo = set(), ["vaecpp"]
    while todo:
        name = _canonical(todo.pop())
        if name in closure:
            continue
        closure.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return closure


def _modules_outside_core():
    if not hasattr(metadata, "packages_distributions"):  # Python 3.9
        pytest.skip("importlib.metadata.packages_distributions needs Python 3.10")
    closure = _core_closure()
    return sorted(module for module, dists in metadata.packages_distributions().items()
                  if not any(_canonical(d) in closure for d in dists))


def run_hiding(hidden, args, tmp_path, timeout=300):
    env = dict(os.environ, MPLBACKEND="Agg", VAECPP_THREADS="1", VAECPP_DATA="",
               VAECPP_CACHE=str(tmp_path / "cache"), VAECPP_MIRROR="http://127.0.0.1:9")
    return subprocess.run([sys.executable, "-c", HIDING_RUNNER, json.dumps(sorted(hidden)), *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=timeout)


def last_error_line(result):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_the_core_dependencies_are_what_the_default_path_needs():
    closure = _core_closure()
    for name in ("numpy", "matplotlib", "scikit-learn"):
        assert name in closure, f"{name} is not a core dependency of vaecpp"
    for name in ("ipywidgets", "pytest", "mpi4py", "safetensors"):
        assert name not in closure, f"{name} should stay optional"


def test_train_runs_with_only_the_core_dependencies(tmp_path):
    hidden = _modules_outside_core()
    assert "pytest" in hidden and "matplotlib" not in hidden and "vaecpp" not in hidden
    out = tmp_path / "run"
    result = run_hiding(hidden, ["train", "--epochs", "2", "--hidden", "32", "--limit", "400",
                                 "--quiet", "--out", str(out)], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in ("loss", "latent", "reconstructions", "samples", "manifold"):
        assert (out / f"{name}.png").stat().st_size > 1000
    assert vaecpp.load_model(out / "model.vae").latent_dim == 2


@pytest.mark.parametrize("module, advice", [("matplotlib", "pip install matplotlib"),
                                            ("sklearn", "pip install scikit-learn")])
def test_a_missing_dependency_is_named_in_one_line(tmp_path, module, advice):
    line = last_error_line(run_hiding([module], ["train", "--epochs", "1", "--out",
                                                 str(tmp_path / "run")], tmp_path))
    assert line.startswith("vaecpp train: error:") and advice in line
    assert not (tmp_path / "run" / "model.vae").exists()


def test_sliders_without_ipywidgets_name_the_extra(monkeypatch):
    from vaecpp import widgets

    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets -> ImportError
    vae = vaecpp.VAE(input_shape=(3, 3), latent_dim=2, hidden=(4,), seed=0)
    with pytest.raises(ImportError, match=re.escape("pip install 'vaecpp[notebook]'")):
        widgets.latent_sliders(vae)


def test_build_info_says_where_eigen_came_from(capsys):
    from vaecpp.__main__ import main

    info = vaecpp.build_info()
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["eigen"])
    assert info["eigen_from"] in ("system", "cmeel-eigen")
    assert main(["info"]) == 0
    assert f"Eigen: {info['eigen']} ({info['eigen_from']})" in capsys.readouterr().out


def test_submodules_are_there_on_first_use_without_importing_their_libraries():
    """``import vaecpp`` then ``vaecpp.datasets`` / ``plot`` / ``widgets`` / ``distributed``, as
    ``keras.datasets``: each module is imported when first asked for, and importing vaecpp
    brings neither matplotlib nor ipywidgets nor mpi4py."""
    code = ("import sys, vaecpp\n"
            "heavy = ('matplotlib', 'ipywidgets', 'mpi4py')\n"
            "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
            "assert {'datasets', 'plot', 'widgets', 'distributed'} <= set(dir(vaecpp))\n"
            "print(vaecpp.datasets.digits.__module__, vaecpp.plot.manifold_grid.__module__,\n"
            "      vaecpp.widgets.latent_sliders.__module__, vaecpp.distributed.__name__)\n"
            "try:\n"
            "    vaecpp.nope\n"
            "except AttributeError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == [
        "vaecpp.datasets vaecpp.plot vaecpp.widgets vaecpp.distributed",
        "module 'vaecpp' has no attribute 'nope'"], out.stdout
