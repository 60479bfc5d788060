"""`python -m tfpipe <command> ...`: the same as the `tfpipe` command."""

import sys

from tfpipe import cli

sys.exit(cli.main())
