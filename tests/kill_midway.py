"""Run ``rcnn ARGS`` in this process and SIGKILL it the moment a library function has returned N times:
a real, abrupt death (no cleanup, no ``finally``) at a chosen point of a stage.

    python -m tests.kill_midway MODULE:QUALNAME N [MODULE:NAME=INT ...] -- ARGS

``MODULE:NAME=INT`` sets a module constant first (say, smaller proposal shards).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys


def main(argv: list[str]) -> None:
    split = argv.index("--")
    (target, times, *settings), args = argv[:split], argv[split + 1 :]
    for setting in settings:
        name, value = setting.split("=")
        module, constant = name.split(":")
        setattr(importlib.import_module(module), constant, int(value))
    module, qualname = target.split(":")
    owner = importlib.import_module(module)
    *parents, name = qualname.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original = getattr(owner, name)
    calls = 0

    def counted(*positional, **keywords):
        nonlocal calls
        result = original(*positional, **keywords)
        calls += 1
        if calls == int(times):
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, counted)
    from rcnn_cli.app import app

    app(args, prog_name="rcnn")


if __name__ == "__main__":
    main(sys.argv[1:])
