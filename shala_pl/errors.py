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
