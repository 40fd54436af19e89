"""tff_byz.processes: a child that dies with its parent; an exit without teardown."""

import os
import subprocess
import sys
import textwrap
import time


def test_exit_now_flushes_and_keeps_the_code_but_skips_atexit():
    script = textwrap.dedent("""
        import atexit, sys
        from tff_byz import processes
        atexit.register(lambda: print("atexit ran"))
        sys.stdout.write("unflushed out")
        sys.stderr.write("unflushed err")
        processes.exit_now(3)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 3
    assert done.stdout == "unflushed out"  # flushed; the atexit handler never ran
    assert done.stderr == "unflushed err"


def test_die_with_parent_kills_the_child_when_the_parent_is_killed():
    script = textwrap.dedent("""
        import subprocess, sys
        from tff_byz import processes
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                                 preexec_fn=processes.die_with_parent)
        print(child.pid, flush=True)
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=False)
    child = int(done.stdout.split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return
        with open(f"/proc/{child}/stat", encoding="ascii") as stat:
            if stat.read().split(")")[-1].split()[0] == "Z":  # a zombie: dead, not yet reaped
                return
        time.sleep(0.1)
    raise AssertionError(f"child {child} outlived its SIGKILLed parent")
