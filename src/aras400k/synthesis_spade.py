"""Deprecated: moved to :mod:`aras400k.synthesis.conditional`; this path goes in the next release."""

from aras400k._lazy import warn_moved_module
from aras400k.synthesis.conditional import *  # noqa: F403 - the moved module's public names
from aras400k.synthesis.conditional import __all__  # noqa: F401 - re-exported

warn_moved_module(__name__, "aras400k.synthesis.conditional")
