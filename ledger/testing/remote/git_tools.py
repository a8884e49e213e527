"""The git executable and the environment every git process of the server runs in."""

from __future__ import annotations

import os
import shutil


def find_git() -> str:
    git = shutil.which("git")
    if git is None:
        raise RuntimeError("git is not on PATH")
    return git


def git_env() -> dict[str, str]:
    """The environment of every git process the server starts: no user or system config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_TERMINAL_PROMPT="0",
    )
    return env
