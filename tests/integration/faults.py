"""Compatibility module: moved to ``tests/support/faults.py``.

TEMPORARY: removed once every test imports ``tests.support``.
"""

from tests.support.faults import *  # noqa: F403
from tests.support.faults import __all__ as __all__
