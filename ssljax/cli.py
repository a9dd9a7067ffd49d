"""absl flags for the commands that are functions too (`python -m ssljax.report`, the
benchmark): each parse defines its flags in a FlagValues of its own, so a command can be
called from Python any number of times, beside `launch.py`'s and the sweep's global flags.

A bad flag ends in one line `error: ...` on stderr and exit status 2, as absl's `app.run`
does; `--help` prints the flags and exits 0. No JAX here: the report uses it.
"""

import sys
from collections.abc import Callable, Sequence

from absl import flags


def usage_error(message: str) -> None:
    """One line `error: MESSAGE` on stderr, then SystemExit(2)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse(
    argv: Sequence[str] | None,
    define: Callable[[flags.FlagValues], None],
    usage: str,
) -> tuple[flags.FlagValues, list[str]]:
    """Parses `argv` (the arguments after the program's name; None: sys.argv[1:]).

    Args:
      define: defines the command's flags in the FlagValues it is given.
      usage: the command line's shape, printed first by --help.
    Returns:
      (the parsed flags, the positional arguments).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    values = flags.FlagValues()
    define(values)
    if "--help" in argv or "-h" in argv:
        print(f"usage: {usage}\n\n{values.get_help()}")
        raise SystemExit(0)
    try:
        rest = values([usage.split()[0], *argv])
    except flags.Error as e:
        usage_error(f"{e} (usage: {usage}; --help lists the flags)")
    return values, rest[1:]
