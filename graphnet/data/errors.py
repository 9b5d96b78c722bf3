"""The error the data package raises on purpose."""

from __future__ import annotations

from ..errors import GraphnetError


class DatasetError(GraphnetError):
    """A data file is missing, unreadable or malformed, or a download failed.

    The message names the file (or URL) and says what is wrong with it.
    """
