"""The former name of :mod:`kseg.kaggle`, kept for one release: import from ``kseg.kaggle`` instead."""
from __future__ import annotations

from kseg.kaggle import *  # noqa: F401,F403
from kseg.kaggle import __all__  # noqa: F401
