"""Test-only job entry point: the real `training_pipeline.run_job`, with the stand-ins of
tests/training_standin.py installed first while train10a's modules are not on this branch."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.training_standin import install

install()

from training_pipeline import run_job  # noqa: E402

sys.exit(run_job(Path(sys.argv[1])))
