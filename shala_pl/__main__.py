"""``shala-pl`` (or ``python -m shala_pl``): ``{fit,validate,test,predict} --config CONFIG`` runs Lightning;
``get-model``, ``make-tiny-model``, ``evaluate``, ``data-stats`` and ``download-data`` run the user tools
(``shala_pl.help.COMMANDS``).

This module stays light: the top-level help and a config-less call answer without importing Lightning, and the
project's own errors (:class:`shala_pl.errors.ShalaError`) end the run with one line on stderr and exit status 2
(``SHALA_DEBUG=1`` shows the traceback). Interrupted runs exit 130 (SIGINT) or 143 (SIGTERM), from start-up
on (see docs/distributed.md, "What a stop guarantees").
"""

from __future__ import annotations

import os
import signal
import sys

from shala_pl.help import COMMANDS, QUICKSTART, SUBCOMMANDS, cached_help, is_help_request, top_level_help


def _fail(message: str) -> int:
    print(f"shala_pl: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in COMMANDS:
        return run_command(argv[0], argv[1:])
    if argv[0] in SUBCOMMANDS and len(argv) == 1:
        return _fail(f"'{argv[0]}' needs a config; start with: {QUICKSTART}  (all configs: python -m shala_pl --help)")
    if is_help_request(argv):  # answered from a cache when nothing it depends on has changed (no torch import)
        print(cached_help(argv, render=lambda: _render_help(argv)), end="")
        return 0

    if from_command_line:  # until the CLI installs its own handler: SIGTERM during start-up is said, not silent
        signal.signal(signal.SIGTERM, _terminated_at_start_up)
    try:
        from shala_pl.cli import cli_main

        cli_main(None if from_command_line else argv)
    except Exception as error:
        from shala_pl.errors import cause_of

        stop = cause_of(error, KeyboardInterrupt)  # raised inside an import, it can come back wrapped
        if stop is not None and not os.environ.get("SHALA_DEBUG"):
            return _stopped_at_start_up(stop, from_command_line)
        found = user_error(error)
        if found is None or os.environ.get("SHALA_DEBUG"):
            raise
        return _fail(str(found))
    except KeyboardInterrupt as stop:  # Ctrl-C / SIGTERM outside training (start-up, data loading): nothing to save
        if os.environ.get("SHALA_DEBUG"):
            raise
        return _stopped_at_start_up(stop, from_command_line)
    return 0


def _stopped_at_start_up(stop: KeyboardInterrupt, from_command_line: bool) -> int:
    code = 143 if isinstance(stop, _Terminated) else 130
    print("shala_pl: stopped by SIGTERM during start-up, nothing to save" if code == 143 else "shala_pl: interrupted",
          file=sys.stderr)
    if from_command_line:
        _exit_now(code)
    return code


class _Terminated(KeyboardInterrupt):
    """SIGTERM before the CLI's handler is in place, unwound like a Ctrl-C."""


def _terminated_at_start_up(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise _Terminated


def run_command(name: str, args: list[str]) -> int:
    """One of the user tools, by its ``module:function`` entry in ``COMMANDS``; its return value is the exit code."""
    import importlib

    module_name, function = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module_name), function)(args) or 0


def _render_help(argv: list[str]) -> str:
    """What ``cli_main(argv)`` prints for a help request (it ends with ``SystemExit(0)``)."""
    import contextlib
    import io

    from shala_pl.cli import cli_main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        try:
            cli_main(None if argv == sys.argv[1:] else argv)  # Lightning warns when both are given
        except SystemExit as done:
            if done.code not in (0, None):
                raise
    return printed.getvalue()


def _exit_now(code: int) -> None:
    """Exit with ``code`` without running the interpreter's shutdown. A KeyboardInterrupt that passed through C code
    running Python source (pybind11's ``exec`` while torch imports) leaves CPython's "unhandled Ctrl-C" flag set
    even though it was caught here, and the interpreter then ends itself with SIGINT (status -2) instead of ``code``.
    At start-up nothing is open that a normal shutdown would have to close."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def user_error(error: BaseException):
    """The :class:`ShalaError` that caused ``error``, if any. jsonargparse wraps what a class raises while it is
    instantiated (``ValueError: Does not validate against any of the Union subtypes``) and keeps the original as
    ``__cause__``; Lightning re-raises what the model or data module raised inside the trainer unchanged."""
    from shala_pl.errors import ShalaError, cause_of

    return cause_of(error, ShalaError)


def console_main() -> None:
    """The ``shala-pl`` console script: ``python -m shala_pl`` under its installed name."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
