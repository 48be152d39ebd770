"""The LotoOps command line: `python3 lotoops/cli.py run|test [args]`.

This file bootstraps: it checks the Python version (clearly, before anything
else can fail), creates `.venv`, installs the locked requirements when they
changed, then hands over to `lotoops.embedded` inside that environment.
It is written in plain, old syntax on purpose so an old interpreter reaches
the version message instead of a SyntaxError.
"""

import hashlib
import os
import subprocess
import sys

MINIMUM = (3, 12)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.environ.get("LOTOOPS_VENV") or os.path.join(ROOT, ".venv")
LOCKS = {
    "run": ["requirements.lock"],
    "test": ["requirements.lock", "requirements-dev.lock"],
}
USAGE = """usage: python3 lotoops/cli.py COMMAND [ARGS]

commands:
  run     migrate, seed the runbook, start the web server (http://127.0.0.1:$PORT,
          default 8000), a Celery worker and beat; Ctrl-C stops them all
  test    run the whole test suite (extra ARGS go to pytest)
"""


def fail(message):
    sys.stderr.write(message.rstrip() + "\n")
    sys.exit(2)


def check_python():
    if tuple(sys.version_info[:2]) < MINIMUM:
        fail(
            "LotoOps needs Python %d.%d or newer; this is Python %d.%d (%s).\n"
            "With pyenv: `pyenv install 3.12` and run the command from the repository "
            "(its .python-version selects 3.12), or call python3.12 directly."
            % (MINIMUM + tuple(sys.version_info[:2]) + (sys.executable,))
        )


def venv_python():
    return os.path.join(VENV, "bin", "python")


def lock_digest(command):
    digest = hashlib.sha256()
    for name in LOCKS[command]:
        with open(os.path.join(ROOT, name), "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()[:16]


def ensure_environment(command):
    python = venv_python()
    if not os.path.exists(python):
        print("Creating the virtual environment in %s ..." % VENV)
        subprocess.check_call([sys.executable, "-m", "venv", VENV])
    stamp = os.path.join(VENV, ".lotoops-%s-%s" % (command, lock_digest(command)))
    if os.path.exists(stamp):
        return python
    print("Installing the locked requirements (%s) ..." % ", ".join(LOCKS[command]))
    args = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for name in LOCKS[command]:
        args += ["-r", os.path.join(ROOT, name)]
    if subprocess.call(args) != 0:
        fail("Installing the requirements failed (see pip's output above).")
    open(stamp, "w").close()
    return python


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    check_python()
    if not argv or argv[0] not in LOCKS:
        sys.stderr.write(USAGE)
        return 2
    python = ensure_environment(argv[0])
    os.chdir(ROOT)
    # Replace this process: Ctrl-C and exit codes go straight to the runner.
    os.execv(python, [python, "-m", "lotoops.embedded"] + argv)
    return 0


if __name__ == "__main__":
    # Run as a script, this folder is sys.path[0]: drop it so `lotoops/celery.py`
    # can never shadow the real `celery` package.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    sys.exit(main())
