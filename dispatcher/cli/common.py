"""What every command-line entry point shares: exit codes and one-line errors."""

from __future__ import annotations

import sys
from typing import NoReturn

# Exit codes: 0 success; 1 the operation failed at run time; 2 the user must fix the input
# (config, flags) or the environment (an unreachable backend) before trying again.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def fail(program: str, message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``program: error: message`` on one line to stderr and exit with ``code``."""
    print(f"{program}: error: {message}", file=sys.stderr)
    raise SystemExit(code)
