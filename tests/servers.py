"""Compatibility module: the servers moved to ``tests/support/servers.py``.

TEMPORARY: removed once every test imports ``tests.support``.
"""

from tests.support.servers import *  # noqa: F403
from tests.support.servers import __all__ as __all__
