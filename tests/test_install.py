"""``pip install .`` (not editable) gives a working ``coupon-bff`` and ``python -m bff``.

The package is built from a copy of the source (a build writes ``build/`` and
``*.egg-info`` next to it) into a throwaway virtualenv under tmp, with
``--no-deps --no-build-isolation``: the venv reaches this interpreter's packages
(the runtime dependencies and setuptools) through a ``.pth`` file, so nothing is
downloaded. The commands then run from another directory, where nothing of the
checkout is importable: only what the wheel holds is there.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import jwt

from tests.test_run_workers import ROOT, SECRET

SOURCES = ("bff", "config", "handlers", "widgets")
PROJECT_FILES = ("setup.cfg", "pyproject.toml", "README.md")


def _copy_source(into: Path) -> Path:
    into.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, into / name)
    for name in SOURCES:
        shutil.copytree(ROOT / name, into / name, ignore=shutil.ignore_patterns("__pycache__"))
    return into


def _venv_reaching_this_interpreter(path: Path) -> Path:
    venv.create(path, with_pip=False)
    python = path / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    shared = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    # Appended after the venv's own site-packages: the installed bff wins over any other.
    (Path(site) / "_shared_dependencies.pth").write_text("\n".join(sorted(shared)) + "\n")
    return python


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BFF_", "PYTHON"))}
    env["BFF_JWT_SECRET"] = SECRET
    return env


def test_a_plain_install_has_the_console_script_and_python_m_bff(tmp_path):
    source = _copy_source(tmp_path / "src")
    python = _venv_reaching_this_interpreter(tmp_path / "venv")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-v"]
    installed = subprocess.run(
        [*pip, "--no-deps", "--no-build-isolation", "--no-index", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        env=_clean_env(),
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # setuptools' packaging warnings ("Package 'bff.static' is absent from the `packages`
    # configuration", deprecations) are printed by the build; there must be none.
    build_output = installed.stdout + installed.stderr
    for warning in ("absent from the `packages`", "SetuptoolsDeprecationWarning", "_Warning"):
        assert warning not in build_output, build_output[-5000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = _clean_env()
    script = python.parent / "coupon-bff"
    helped = subprocess.run(
        [str(script), "--help"], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: coupon-bff")
    for variable in ("BFF_PORT", "BFF_DATABASE_URL", "BFF_REDIS_URL", "BFF_CORS_ORIGINS"):
        assert variable in helped.stdout
    minted = subprocess.run(
        [str(python), "-m", "bff", "token", "--role", "merchant", "--shop", "s1", "--sub", "m1"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert minted.returncode == 0, minted.stderr
    claims = jwt.decode(minted.stdout.strip(), SECRET, algorithms=["HS256"], issuer="coupon-bff")
    assert (claims["sub"], claims["role"], claims["shop"]) == ("m1", "merchant", "s1")
    # The bff that ran is the installed one, with its data files (the docs and demo pages).
    located = subprocess.run(
        [
            str(python),
            "-c",
            "import bff, importlib.resources as r; print(bff.__file__); "
            "print(r.files('bff').joinpath('static/demo/index.html').is_file())",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.split()
    assert located[0].startswith(str(tmp_path / "venv")) and located[1] == "True", located


def test_documented_installs_of_the_opentelemetry_extras_upgrade_pip_first():
    """The test and tracing extras pin the OpenTelemetry packages to one release set, which
    the pip of Python 3.11 (23.2) cannot resolve (``ResolutionImpossible``): every shell block
    of the README and docs/ that makes a venv, or installs the tracing extra, upgrades pip
    before it installs (issue 19: the README's setup command runs as written)."""
    offending = []
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for block in re.findall(r"```sh\n(.*?)```", doc.read_text(), re.S):
            upgraded = False
            for line in block.splitlines():
                for command in re.split(r"&&|;", line.split("  #")[0]):
                    if re.search(r"pip install (-U|--upgrade) pip\b", command):
                        upgraded = True
                    elif "-m venv" in command:
                        upgraded = False  # a fresh venv has the interpreter's own pip
                    elif re.search(r"pip install .*\.\[[^\]]*(test|tracing)", command):
                        if not upgraded and ("-m venv" in line or "tracing" in command):
                            offending.append(f"{doc.name}: {line.strip()}")
    assert offending == [], offending
