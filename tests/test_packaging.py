"""`pip install .` gets every package of the project (setup.py)."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = {"orchestration", "algorithms", "tff_byz", "aggregators", "attacks", "fedlaw", "pdmm",
            "pipelines", "benchmarks", "examples"}


def test_the_wheel_holds_every_package_and_the_example_grids(tmp_path):
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    source = tmp_path / "src"
    for name in tracked:  # a clean copy: the build writes build/ and *.egg-info beside setup.py
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                          cwd=source, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == PACKAGES
    for module in ("pdmm/process.py", "pdmm/decentralized.py", "benchmarks/client_data.py",
                   "tff_byz/datasets/store.py", "examples/quick.toml"):
        assert module in names, module
    assert not any(name.startswith("tests/") for name in names)
    assert os.path.getsize(wheel) < 2_000_000
