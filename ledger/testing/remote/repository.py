"""The bare repository the server serves: created if missing, configured, and its hooks.

The hooks read the mode file on every push: pre-receive declines in REJECT, post-receive moves
every pushed ref back in ROLLBACK.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from ledger.testing.remote.git_tools import find_git, git_env
from ledger.testing.remote.modes import MODE_FILE, Mode

REJECT_MESSAGE = "index is read-only: maintenance"

# The hooks use the shell's builtins only: a fork of ``cat`` costs a push a few milliseconds.
_PRE_RECEIVE = """#!/bin/sh
while read -r _; do :; done
mode=
read -r mode 2>/dev/null < {mode_file}
if [ "$mode" = "{reject}" ]; then
    echo "{message}" >&2
    exit 1
fi
exit 0
"""

_POST_RECEIVE = """#!/bin/sh
mode=
read -r mode 2>/dev/null < {mode_file}
while read -r old new ref; do
    if [ "$mode" = "{rollback}" ]; then
        case "$old" in
            *[!0]*) git update-ref "$ref" "$old" "$new" ;;
            *) git update-ref -d "$ref" "$new" ;;
        esac
    fi
done
exit 0
"""


def prepare_repository(base_dir: Path, bare_path: Path, branch: str) -> None:
    """Create the bare repository at ``bare_path`` if missing, configure it, install the hooks."""
    git, env = find_git(), git_env()
    if not (bare_path / "HEAD").exists():
        subprocess.run(
            [
                git,
                "init",
                "--quiet",
                "--bare",
                f"--initial-branch={branch}",
                "--",
                str(bare_path),
            ],
            check=True,
            env=env,
        )
    settings = (
        ("http.receivepack", "true"),
        ("daemon.receivepack", "true"),
        # A push never starts a gc, so per-push cost stays flat over thousands of pushes.
        ("receive.autogc", "false"),
    )
    for key, value in settings:
        subprocess.run([git, f"--git-dir={bare_path}", "config", key, value], check=True, env=env)
    mode_file = shlex.quote(str(base_dir / MODE_FILE))
    hooks = bare_path / "hooks"
    hooks.mkdir(exist_ok=True)
    scripts = {
        "pre-receive": _PRE_RECEIVE.format(
            mode_file=mode_file, reject=Mode.REJECT.value, message=REJECT_MESSAGE
        ),
        "post-receive": _POST_RECEIVE.format(mode_file=mode_file, rollback=Mode.ROLLBACK.value),
    }
    for name, text in scripts.items():
        hook = hooks / name
        hook.write_text(text, encoding="utf-8")
        hook.chmod(0o755)
