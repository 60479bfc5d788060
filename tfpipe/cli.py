"""The `tfpipe` command: `tfpipe <command> [flags]`, also `python -m tfpipe`.

    tfpipe train --config digits_mlp --workdir runs/mlp --set train.epochs=5
    tfpipe benchmark_input --config digits_mlp
    tfpipe --help

Each command is a module with absl flags and `main(argv)`; it runs exactly
as `scripts/<command>.py` does (same flags, output and exit codes). Only the
chosen command's module is imported, so commands may define flags of the
same name. Adding a command is one line in `COMMANDS`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

# Dispatch by plain dict: command -> "module:function". A command whose module
# is not installed (an optional part) is left out of `available()`.
COMMANDS = {
    "train": "tfpipe.commands.train:main",
    "evaluate": "tfpipe.commands.evaluate:main",
    "predict": "tfpipe.commands.predict:main",
    "benchmark_input": "tfpipe.commands.benchmark_input:main",
    "analyze_profile": "tfpipe.commands.analyze_profile:main",
    "capture_profile": "tfpipe.commands.capture_profile:main",
    "launch_local": "tfpipe.commands.launch_local:main",
    "data_service": "tfpipe.commands.data_service:main",
    "make_workload": "tfpipe.commands.make_workload:main",
    "make_tfrecords": "tfpipe.commands.make_tfrecords:main",
    "tune": "tfpipe.tune.cli:main",
    "export": "tfpipe.serve.export:main",
    "serve": "tfpipe.serve.server:main",
}
# Commands with their own argparse parser: `main(args)` takes the arguments
# after the command name and returns the exit code (no absl flags).
ARGPARSE = {"export", "serve"}


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # the parent package is absent
        return False


def available() -> dict[str, str]:
    """The commands whose module is installed."""
    return {name: target for name, target in COMMANDS.items() if _exists(target.partition(":")[0])}


def _usage() -> str:
    names = available()
    lines = ["usage: tfpipe <command> [flags]   (tfpipe <command> --help lists its flags)", "", "commands:"]
    for name, target in names.items():
        doc = (importlib.util.find_spec(target.partition(":")[0]) and _summary(target)) or ""
        lines.append(f"  {name:<16} {doc}")
    return "\n".join(lines)


def _summary(target: str) -> str:
    """A command's one-line summary: the first docstring line, read without importing it."""
    import ast  # pylint: disable=import-outside-toplevel

    spec = importlib.util.find_spec(target.partition(":")[0])
    try:
        with open(spec.origin, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError, TypeError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def main(argv: list[str] | None = None) -> int:
    """Runs `tfpipe <command> ...`; exits with the command's status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        import tfpipe  # pylint: disable=import-outside-toplevel

        print(f"tfpipe {tfpipe.__version__}")
        return 0
    name = argv[0].replace("-", "_")
    commands = available()
    if name not in commands:
        print(f"error: tfpipe: unknown command {argv[0]!r}; expected one of {', '.join(commands)}", file=sys.stderr)
        return 2
    import tfpipe  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import  # quiets TensorFlow first
    from absl import app, flags  # pylint: disable=import-outside-toplevel

    module_name, _, function = commands[name].partition(":")
    command = getattr(importlib.import_module(module_name), function)
    if name in ARGPARSE:
        return command(argv[1:])
    # absl's --help lists the key flags of the module named by sys.argv[0]
    # (the `tfpipe` launcher or scripts/x.py): make the command's flags theirs.
    for flag in flags.FLAGS.get_flags_for_module(module_name):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(command, argv=[f"tfpipe {name}", *argv[1:]])  # exits with command's return value
    return 0
