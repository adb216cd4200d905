"""A unit's command line as an argv, and MPI host files: plain helpers the launch methods share
(built-in or not).

A unit's command line is run by ``/bin/sh`` as the contract says; a line with nothing a shell
would treat specially is executed directly, which gives the same result without a shell's cost.
"""

from __future__ import annotations

import os
import string
import tempfile

from pilot.plugin.types import LaunchRequest

_PLAIN = frozenset(string.ascii_letters + string.digits + "-_./:,+@%^= ")
_SHELL_WORDS = frozenset({
    ".", ":", "[", "alias", "bg", "break", "case", "cd", "command", "continue", "do", "done", "echo", "elif",
    "else", "esac", "eval", "exec", "exit", "export", "false", "fc", "fg", "fi", "for", "getopts", "hash",
    "if", "in", "jobs", "kill", "local", "printf", "pwd", "read", "readonly", "return", "set", "shift",
    "test", "then", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "until", "wait",
    "while", "{", "}", "!",
})


def command_argv(line: str) -> list[str]:
    """The argv that runs ``line`` as ``/bin/sh -c`` would, skipping the shell when it can."""
    words = line.split()
    if words and _PLAIN.issuperset(line) and "=" not in words[0] and words[0] not in _SHELL_WORDS:
        return words
    return ["/bin/sh", "-c", line]


def write_hostfile(request: LaunchRequest) -> str:
    """A new host file (one line per slot) in the unit's sandbox, under a name of its own
    (``.pilot-hostfile-<random>``): never a user's file, never another unit's."""
    fd, hostfile = tempfile.mkstemp(prefix=".pilot-hostfile-", dir=request.sandbox)
    with os.fdopen(fd, "w") as stream:
        stream.write("".join(f"{host}\n" for host in request.hosts))
    return hostfile
