"""The ``fvdesk`` command: the GUI when given no command, headless subcommands otherwise.

``fvdesk`` or ``fvdesk MODEL.onnx`` start the desktop app (PySide6 is imported only then);
``fvdesk layers|info|render|atlas ...`` run on the Qt-free core.  Heavy imports (torch, the
loader) happen inside the commands so ``--help`` stays fast.

Exit codes: 0 done, 1 failed (one-line ``FvdeskError`` message on stderr; ``--debug`` adds the
traceback), 2 bad arguments (argparse errors, unknown layers with suggestions, units out of range),
130 interrupted (Ctrl+C), 143 terminated (SIGTERM).  Both interruptions leave every gallery
consistent; re-running the same command resumes an atlas.
"""

from __future__ import annotations

import argparse
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fvdesk.cli.args import (
    COMMANDS,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    Terminated,
    UnitSpec,
    UsageError,
)
from fvdesk.cli.parser import build_parser
from fvdesk.cli.terminal import Progress


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if _wants_gui(args_list):
        return _run_gui(args_list)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # argparse: --help/--version (0) or bad arguments (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "self_test", False) and not getattr(args, "command", None):
        from fvdesk.selftest import run_self_test

        return run_self_test()
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    previous = _install_sigterm()
    try:
        return args.func(args)
    except UsageError as e:
        print(f"fvdesk {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nfvdesk: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("\nfvdesk: terminated.", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback with --debug
        from fvdesk.core.errors import FvdeskError

        if args.debug:
            traceback.print_exc()
        if isinstance(e, FvdeskError):
            print(f"fvdesk: error: {e}", file=sys.stderr)
        else:
            where = "" if args.debug else " (run with --debug for the traceback)"
            print(f"fvdesk: internal error: {type(e).__name__}: {e}{where}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _wants_gui(argv: list[str]) -> bool:
    """The app unless a command (or --help/--version) is asked for: ``fvdesk``,
    ``fvdesk MODEL.onnx``, ``fvdesk MODEL.onnx --device cpu``, ``fvdesk --device cuda:1``."""
    if any(a in ("-h", "--help", "--version", "--self-test") for a in argv):
        return False
    if not argv or argv[0].startswith("-"):
        return not any(a in COMMANDS for a in argv)
    first = argv[0]
    if first in COMMANDS:
        return False
    return first.lower().endswith(".onnx") or Path(first).exists()


def gui_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fvdesk", description="Start the desktop app.")
    p.add_argument(
        "model", nargs="?", metavar="MODEL", help="ONNX file to open (default: the demo)"
    )
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the app's setting)")
    return p


def _run_gui(argv: list[str]) -> int:
    try:
        args = gui_parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    from fvdesk.core.display_check import check_display

    problem = check_display()  # before Qt loads: its own failure is an abort and a core dump
    if problem is not None:
        print(f"fvdesk: error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    try:
        from fvdesk.gui.app import run_app
    except ImportError as e:
        print(
            f"fvdesk: error: the desktop app cannot start ({e}); install PySide6-Essentials, "
            "or use the headless commands (fvdesk --help).",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return run_app(args.model or None, device=args.device)


def _install_sigterm() -> Any:
    """Turn SIGTERM into an exception so atomic writes finish their cleanup (main thread only)."""

    def handler(_signum: int, _frame: object) -> None:
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM
        return None


__all__ = ["Progress", "UnitSpec", "build_parser", "main"]
