"""Reading the files rotator is given: secrets (``api_token_file``, a webhook's ``secret_file``,
``http.auth_token_file``), the config file and the state file.

Each must be a regular file no larger than its bound. It is opened without blocking (``O_NONBLOCK``:
opening a named pipe would otherwise wait for a writer, for ever) and judged by ``fstat`` of what was
opened, not by a ``stat`` beforehand that a swapped file could outrun. A named pipe, a device
(``/dev/zero`` never ends: read whole, it grew the daemon to 2 GB), a directory or a socket is a
``FileProblem`` saying what it is and what was expected; so is a file larger than its bound, read
no further than the bound. Callers translate it at their boundary (ConfigError, CredentialError,
StateFileError), naming the file; the daemon reads them off the event loop with a timeout
(``rotator.daemon``), since even a regular file can hang on a network file system.

The bounds, and why:

- a secret: 64 KiB (``MAX_SECRET_BYTES``). A Cloudflare token is 40 bytes, an HMAC secret a few
  dozen; 64 KiB is far above any secret and costs nothing to hold.
- the config: 10 MiB (``rotator.config.model.MAX_CONFIG_BYTES``): 10,000 accounts take about 1 MB.
- the state file: 256 MiB (``MAX_STATE_BYTES``): a record is about 400 bytes (a rotation with its
  ``why``), so 300,000 accounts take about 120 MB.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from rotator.errors import RotatorError

MAX_SECRET_BYTES = 64 * 1024
MAX_STATE_BYTES = 256 * 2**20
_CHUNK = 1 << 20


class FileProblem(RotatorError):
    """The file is not a regular file, or is larger than its bound; ``what`` says so in a user's
    words (without the path: the caller names the file, or describes it when the path could be a
    secret)."""

    def __init__(self, what: str, *, too_large: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.too_large = too_large


def read_regular_file(path: Path, limit: int, expected: str) -> bytes:
    """The bytes of ``path``; FileProblem when it is not a regular file or holds more than
    ``limit`` bytes (``expected``: what it should be, "a YAML file"); OSError (FileNotFoundError
    among them) when it cannot be opened or read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileProblem(f"{file_kind(info.st_mode)}, not a regular file: expected {expected}")
        if info.st_size > limit:
            raise FileProblem(_too_large(limit, expected), too_large=True)
        chunks, size = [], 0
        while size <= limit:  # the size may have changed since fstat
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileProblem(_too_large(limit, expected), too_large=True)
        return b"".join(chunks)
    finally:
        os.close(fd)


def file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def _too_large(limit: int, expected: str) -> str:
    size = f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"
    return f"larger than {size}: expected {expected}"
