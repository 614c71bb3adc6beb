"""torchrun target of tests/test_ddp.py: `python -m systems.train`, stopped after STOP_AFTER_EPOCHS
epochs (engine.train's `stop_after_epochs`), as an interruption would stop it."""
from __future__ import annotations

import functools
import os

from core.errors import run_cli
from systems import train as cli
from systems.common import engine

# systems.train imports engine.train when a training is to run, so it finds this one
engine.train = functools.partial(engine.train, stop_after_epochs=int(os.environ["STOP_AFTER_EPOCHS"]))

if __name__ == "__main__":
    run_cli(cli.main)
