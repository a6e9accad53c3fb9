"""pipeline package."""

from schemas.native import extend

__path__ = extend(__name__, __path__)  # compiled modules first, when current
