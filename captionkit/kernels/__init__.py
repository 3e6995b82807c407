from captionkit.kernels._recurrence import *  # noqa: F401,F403
from captionkit.kernels._recurrence import __all__  # noqa: F401
