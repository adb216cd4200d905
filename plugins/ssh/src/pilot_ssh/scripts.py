"""The POSIX shell scripts the adaptor runs on the remote host (``sh -s``, fed on standard input,
so nothing in them, such as a store password, shows in a process list). Every value is quoted
with ``shlex.quote``. Scripts report through lines ``@pilot-ssh <key> <text>`` on stdout."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

MARK = "@pilot-ssh"
#: Exit status of the Python check: no pilot-core, Python too old, no plugin for the store.
NO_PILOT, OLD_PYTHON, NO_STORE = 42, 43, 44

# Run by the remote Python: can it run the agent, and does it open the store that holds the pilot
# (argv: store URL, pilot id)? Python 2 must parse it too, to say it is too old.
_CHECK = """import sys
if sys.version_info < (3, 11):
    print("Python %d.%d" % sys.version_info[:2]); sys.exit(43)
try:
    import pilot.agent.runner
    from pilot.plugin.manager import PluginManager
except Exception as exc:
    print("%s: %s" % (type(exc).__name__, exc)); sys.exit(42)
try:
    store = PluginManager().store_for(sys.argv[1].partition(":")[0]).open(sys.argv[1])
    found = store.get_pilots([sys.argv[2]])
    store.close()
except Exception as exc:
    print("%s: %s" % (type(exc).__name__, exc)); sys.exit(44)
if not found:
    print("the store it opens holds no pilot %s (another file or server of the same name?)" % sys.argv[2])
    sys.exit(44)
"""

# The command line of a process, whole (``ps`` may cut it at 80 columns).
_ARGS = """args_of() {
  if [ -r "/proc/$1/cmdline" ]; then tr '\\000' ' ' < "/proc/$1/cmdline"
  else ps -ww -o args= -p "$1" 2>/dev/null || ps -o args= -p "$1" 2>/dev/null; fi
}
is_agent() { case "$(args_of "$pid")" in *pilot.agent*"--pilot $pilot "*|*pilot.agent*"--pilot $pilot") return 0;; esac
  return 1; }
# a zombie is gone
exists() { case "$(ps -o stat= -p "$1" 2>/dev/null)" in ""|Z*|X*) return 1;; esac; return 0; }
"""


def q(value: str) -> str:
    """``value`` quoted for the shell."""
    return shlex.quote(value)


def start(*, sandbox: str, argv: Sequence[str], environment: Mapping[str, str], pre_commands: Sequence[str],
          store_url: str, pilot_id: str, probe: tuple[str, str, str] | None) -> str:
    """Create the sandbox (the login's umask applies), export ``environment``, run the
    ``pre_commands``, check that the Python runs the agent and opens the store holding the pilot,
    then start ``argv`` detached (``nohup``, ``setsid``: its own session; output to
    ``<sandbox>/agent.log``) and print its pid. ``probe`` is ``(store path, probe file, token)``
    for an SQLite store: the host must read the probe beside it and may write the store."""
    lines = ["{", f"fail() {{ printf '{MARK} %s %s\\n' \"$1\" \"$2\"; exit 1; }}",
             f"sandbox={q(sandbox)}",
             'out=$(mkdir -p -- "$sandbox" 2>&1) || fail sandbox "$out"',
             'cd -- "$sandbox" || fail sandbox "cannot enter $sandbox"']
    if probe is not None:
        store, probe_file, token = probe
        lines += [f"store={q(store)}",
                  f'[ "$(cat -- {q(probe_file)} 2>/dev/null)" = {q(token)} ] || fail store-unshared ""',
                  '[ -w "$store" ] && [ -w "$(dirname -- "$store")" ] || fail store-readonly ""']
    lines += [f"export {name}={q(value)}" for name, value in environment.items()]
    lines.append('export PILOT_AGENT_LOG="$sandbox/agent.log"')
    if pre_commands:
        lines += ["{", *pre_commands, '} >>"$PILOT_AGENT_LOG" 2>&1']
    lines += [f"py={q(argv[0])}",
              'command -v "$py" >/dev/null 2>&1 || fail python ""',
              f"out=$(\"$py\" -c {q(_CHECK)} {q(store_url)} {q(pilot_id)} 2>&1)",
              'rc=$?; [ "$rc" = 0 ] || fail "check-$rc" "$(printf %s "$out" | tail -n 3)"',
              "setsid=; command -v setsid >/dev/null 2>&1 && setsid=setsid",
              f'nohup $setsid "$py" {" ".join(q(a) for a in argv[1:])} >>"$PILOT_AGENT_LOG" 2>&1 &',
              f"printf '{MARK} pid %s\\n' \"$!\"",
              "} </dev/null"]
    return "\n".join(lines) + "\n"


def status(pid: int, pilot_id: str, log: str | None) -> str:
    """Print ``running`` while ``pid`` is the pilot's agent, else ``gone`` and the log's tail."""
    tail = f"[ -r {q(log)} ] && tail -n 5 -- {q(log)}" if log else ":"
    return (f"pid={pid}\npilot={q(pilot_id)}\n{_ARGS}"
            f"if is_agent; then echo {MARK} running; else echo {MARK} gone; {tail}; fi\n")


def cancel(pid: int, pilot_id: str, grace: float) -> str:
    """SIGTERM the agent (it drains and ends its units), wait up to ``grace`` s, then SIGKILL
    what is left of its session. A pid that now belongs to another process is left alone; when
    the agent is gone, its units (same session id, which the kernel does not reuse while they
    live) are ended."""
    steps = max(1, int(grace * 10))
    return (f"pid={pid}\npilot={q(pilot_id)}\n{_ARGS}"
            "if is_agent; then\n"
            '  kill -TERM "$pid" 2>/dev/null\n'
            f'  i=0; while is_agent && [ "$i" -lt {steps} ]; do sleep 0.1; i=$((i + 1)); done\n'
            'elif exists "$pid"; then\n'
            f"  echo {MARK} not-ours; exit 0\n"
            "fi\n"
            'left=$(ps -e -o pid= -o sid= 2>/dev/null | awk -v s="$pid" \'$2 == s { print $1 }\')\n'
            '[ -n "$left" ] && kill -KILL $left 2>/dev/null\n'
            f"echo {MARK} ended\n")
