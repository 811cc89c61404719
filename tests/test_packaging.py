"""The package as a user installs it: a wheel and an sdist built from this tree, checked, and used.

``python -m build`` builds, from a copy of the tree as a clone has it, the sdist and then the wheel
from the unpacked sdist (so a file missing from the sdist fails here too); ``twine check`` validates
both. The wheel must carry every module, the UI plugin's assets, ``py.typed`` and the entry points
Airflow and pytest look for; the sdist must carry what a clone has for the demo and the tests.
Installed (``--no-deps`` into a folder, beside this environment's dependencies), the wheel serves
the plugin's pages from its own files.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "airflow_provider_claude_batch"
ENTRY_POINTS = {
    "console_scripts": {"claude-batch": f"{PACKAGE}.cli:main"},
    "apache_airflow_provider": {"provider_info": f"{PACKAGE}.get_provider_info:get_provider_info"},
    "airflow.policy": {"claude_batch_routing": f"{PACKAGE}.policy"},
    "airflow.plugins": {"claude_batch": f"{PACKAGE}.plugins.ui:ClaudeBatchPlugin"},
    "pytest11": {"claude_batch_emulator": f"{PACKAGE}.testing.pytest_plugin"},
}


def tracked(pattern: str) -> list[str]:
    """Files git tracks under ``pattern`` (the tree the distributions are built from)."""
    result = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, check=True)
    return [line for line in result.stdout.splitlines() if line]


def clean_tree(target: Path) -> Path:
    """The working tree as a fresh clone has it: files git tracks or would track, no build leftovers.

    (A ``*.egg-info`` folder left by an editable install lists files setuptools would add to the sdist
    whatever MANIFEST.in says; a clone has none.)
    """
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    for name in listed.stdout.splitlines():
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    tree = clean_tree(tmp_path_factory.mktemp("clone"))
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(tree)], capture_output=True, text=True, timeout=600
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    [wheel] = out.glob("*.whl")
    [sdist] = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist, "dir": out}


def test_twine_check_passes_on_both(dist):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dist["wheel"]), str(dist["sdist"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2


def test_wheel_has_every_module_the_plugin_assets_py_typed_and_the_entry_points(dist):
    with zipfile.ZipFile(dist["wheel"]) as wheel:
        names = set(wheel.namelist())
        [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser()
        parser.optionxform = str  # entry point names are case-sensitive
        parser.read_string(wheel.read(entry_points).decode())
    modules = {path for path in tracked(PACKAGE) if path.endswith(".py")}
    assert modules and modules <= names, sorted(modules - names)
    assets = set(tracked(f"{PACKAGE}/plugins/assets"))
    assert {
        f"{PACKAGE}/plugins/assets/{name}" for name in ("page.html", "style.css", "batches.js", "routing.js")
    } <= assets
    assert assets <= names, sorted(assets - names)
    assert f"{PACKAGE}/py.typed" in names
    assert any(name.startswith(f"{PACKAGE}/testing/") for name in names)  # the emulator ships for users' tests
    for group, entries in ENTRY_POINTS.items():
        assert dict(parser[group]) == entries, group
    # The example DAGs are not a module of the package: they come with a clone or the sdist.
    assert not any(name.startswith(("dags_examples/", "tests/", "docs/")) for name in names)


def test_sdist_has_what_a_clone_has_for_the_demo_and_the_tests(dist):
    with tarfile.open(dist["sdist"]) as sdist:
        root = sdist.getnames()[0].split("/")[0]
        names = {name.removeprefix(root + "/") for name in sdist.getnames()}
    wanted = [*tracked("dags_examples"), *tracked("scripts"), *tracked("tests"), *tracked("docs"), *tracked(PACKAGE)]
    wanted += ["README.md", "pyproject.toml", "docker-compose.airflow.yml", "docker/Dockerfile"]
    missing = sorted(set(wanted) - names)
    assert not missing, missing
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


def test_the_installed_wheel_serves_the_plugin_pages_from_its_own_files(dist, tmp_path):
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(dist["wheel"])],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    code = (
        "from datetime import date, datetime, timezone\n"
        f"import {PACKAGE}.plugins.pages as pages\n"
        f"from {PACKAGE}.plugins.cost_history import cost_history\n"
        f"from {PACKAGE}.plugins.routing_page import render_routing_page\n"
        "print(pages.__file__)\n"
        "history = cost_history([], today=date(2026, 3, 1))\n"
        "page = render_routing_page('/claude-batch', history, dag_id=None, generated_at=datetime.now(timezone.utc))\n"
        "assert 'function load(refresh)' in page and ':root {' in page, 'assets missing'\n"
        "task = {'dag_id': 'd', 'run_id': 'r', 'task_id': 't', 'map_index': -1}\n"
        "assert 'function refresh()' in pages.render_batches_page('/p', task, refresh_seconds=10, progress_note='n')\n"
    )
    # The installed copy first on the path, this environment's dependencies after it; from an empty
    # folder, so the source tree cannot be imported by accident.
    env = {"PYTHONPATH": str(target), "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().startswith(str(target)), run.stdout  # not the editable install of this tree
    cli = subprocess.run(
        [sys.executable, "-m", f"{PACKAGE}.cli", "--help"], capture_output=True, text=True, cwd=tmp_path, env=env
    )
    assert cli.returncode == 0 and "audit" in cli.stdout and "emulator" in cli.stdout
