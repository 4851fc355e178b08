"""`chalice package` for the Lambda runtime we deploy, whatever Python runs it.

Chalice takes the Lambda runtime from the interpreter that packages (3.11 here), and python3.11
on Lambda sits on Amazon Linux 2. We deploy on python3.13 (Amazon Linux 2023, supported longest).
Two adjustments make Chalice package for it from any Python: the runtime it writes into the
template, and the Python version pip is told when it fetches wheels of compiled dependencies
(brotli) for the Lambda's ABI and architecture. Arguments are `chalice package`'s.
"""

from __future__ import annotations

import sys
from typing import Any

LAMBDA_RUNTIME = "python3.13"


def main() -> int:
    from chalice.cli import main as chalice_main
    from chalice.config import Config
    from chalice.deploy.packager import PipRunner

    Config.lambda_python_version = property(lambda self: LAMBDA_RUNTIME)  # type: ignore[method-assign,assignment]
    execute = PipRunner._execute

    def execute_for_lambda(self: Any, command: str, args: list[str], *rest: Any, **kw: Any) -> Any:
        if command == "download" and "--abi" in args:
            # pip otherwise assumes the running interpreter's version and finds no cp313 wheel.
            args = [*args[:-1], "--python-version", LAMBDA_RUNTIME.removeprefix("python"), args[-1]]
        return execute(self, command, args, *rest, **kw)

    PipRunner._execute = execute_for_lambda  # type: ignore[method-assign]
    sys.argv = ["chalice", "package", *sys.argv[1:]]
    return int(chalice_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
