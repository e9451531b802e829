"""Errors a user can fix from the config or the command line.

The CLI prints any ``ShalaError`` as one line on stderr and exits 2 (``SHALA_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations


class ShalaError(Exception):
    """A problem in the user's input (data, model path, config value), stated in one line."""


class ModelPathError(ShalaError, FileNotFoundError):
    """``model.name_or_path`` is not a usable local model directory."""


class ConfigValueError(ShalaError, ValueError):
    """A config option holds a value it cannot take; the message names the option."""


class NonFinitePredictionsError(ShalaError):
    """The model gave NaN or infinite label probabilities for some rows, so its scores are NaN, not numbers."""


def cause_of(error: BaseException, kind: type):
    """The first exception of type ``kind`` in ``error``'s chain of causes and contexts (``error`` itself
    included), or ``None``."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None
