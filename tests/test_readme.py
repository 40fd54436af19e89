"""The README's library snippets run as written (in a fresh interpreter) and say something."""

import os
import pathlib
import re
import subprocess
import sys

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_the_library_snippets_run_print_their_results_and_stay_quiet(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    script = tmp_path / "snippet.py"
    script.write_text(blocks[0] + "\n" + blocks[1])  # by value, then by reference
    env = dict(os.environ, TFF_BYZ_CACHE=str(tmp_path / "cache"))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the snippet sets it itself
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=600, env=env, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"round 3: train loss \d\.\d{3}", done.stdout), done.stdout
    assert "by reference: (64, 32)" in done.stdout
    noise = [line for line in done.stderr.splitlines() if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert not noise, noise[:3]  # TensorFlow's C++ log lines
