"""Compatibility module: moved to ``tests/support/cli.py``.

TEMPORARY: removed once every test imports ``tests.support``.
"""

from tests.support.cli import *  # noqa: F403
from tests.support.cli import __all__ as __all__
