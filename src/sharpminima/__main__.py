"""The `sharpminima` command's entry point (`python -m sharpminima` too): Ctrl-C at any moment
is one line and the documented rerun, never a traceback and never lost.

Python raises the interrupt in whatever code runs when it comes: while the modules load (caught
here), in a finaliser or an at-fork callback (where Python prints "Exception ignored" and drops
it, and the command ran on to the end: `_unraisable` raises it again), or after the command has
finished (ignored: it changes nothing)."""

import os
import signal
import sys


def _unraisable(default):
    def hook(unraisable) -> None:
        if issubclass(unraisable.exc_type, KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # again, where it can stop the command
        else:
            default(unraisable)

    return hook


def run() -> int:
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    code = None
    try:
        from .cli import main

        code = main()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except KeyboardInterrupt:
        if code is None:
            print("sharpminima: interrupted while starting; run the command again", file=sys.stderr)
            code = 130
    if code == 130:
        # An interrupt that landed in code a C extension runs with PyRun_String (PyTorch's
        # import does) leaves CPython 3.11 marked "unhandled", and it then kills itself with
        # SIGINT at exit even though the interrupt was handled: leave with our status instead.
        # The `with` blocks on the way out have run: locks, temporaries and files are closed.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(run())
