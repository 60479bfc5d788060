"""The command-line programs, one module each: absl flags and `main(argv)`.

`tfpipe <command> ...` (tfpipe/cli.py) and `scripts/<command>.py` both run
them; see `tfpipe.cli.COMMANDS`.
"""
