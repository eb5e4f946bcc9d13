"""Compatibility module: moved to ``tests/support/datafiles.py``.

TEMPORARY: removed once every test imports ``tests.support``.
"""

from tests.support.datafiles import *  # noqa: F403
from tests.support.datafiles import __all__ as __all__
