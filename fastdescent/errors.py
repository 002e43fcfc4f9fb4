"""The small error hierarchy of fastdescent.

Bad arguments raise the built-in ``ValueError``/``TypeError`` (with a message naming the argument);
the classes here are for failures of the library itself.
"""

__all__ = ["FastDescentError", "BackendUnavailableError", "KernelError"]


class FastDescentError(Exception):
    """Base class of fastdescent's own errors."""


class BackendUnavailableError(FastDescentError, RuntimeError):
    """A backend asked for by name cannot be loaded; ``__cause__`` holds the original error."""


class KernelError(FastDescentError, RuntimeError):
    """A compiled kernel returned a non-zero status code.

    Attributes
    ----------
    code : int
        The status returned by the C function (see ``fd_strerror``).
    kernel : str
        Name of the kernel that failed.
    """

    def __init__(self, kernel, code, message):
        super().__init__(f"kernel {kernel!r} failed with status {code}: {message}")
        self.kernel = kernel
        self.code = code
