"""Compatibility module: the running bulkio moved to ``tests/support/service.py``.

TEMPORARY: removed once every test imports ``tests.support``.
"""

from tests.support.processes import Proc
from tests.support.service import *  # noqa: F403
from tests.support.service import __all__ as _service_all

__all__ = [*_service_all, "Proc"]
