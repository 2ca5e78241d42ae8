"""Writing to a pipe, which may take a buffer in several pieces."""

import os


def write_all(fd: int, data) -> None:
    """Write all of `data` (bytes or a memoryview) to `fd`, however many writes it takes."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
