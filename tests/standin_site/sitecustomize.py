"""Loaded by every Python process of an e2e backend started with this folder on PYTHONPATH (only while
train10a's training modules are missing): installs tests/training_standin.py's stand-ins."""

from tests.training_standin import install

install()
