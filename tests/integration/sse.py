"""Compatibility module: moved to ``tests/support/sse.py``.

TEMPORARY: removed once every test imports ``tests.support``.
"""

from tests.support.sse import *  # noqa: F403
from tests.support.sse import __all__ as __all__
