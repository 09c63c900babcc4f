"""Redis key names for what agents keep in Redis themselves (shared vectors, tasks).

Every key name is defined once, in :class:`registry.keys.RedisKeys`; agents reach the
registry's code only through the scaffold, so this is where they import it from.
"""

from registry.keys import RedisKeys

__all__ = ["RedisKeys"]
