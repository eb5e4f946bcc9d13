"""Compatibility module: moved to ``tests/support/uploads.py``.

TEMPORARY: removed once every test imports ``tests.support``.
"""

from tests.support.uploads import *  # noqa: F403
from tests.support.uploads import __all__ as __all__
