"""Exceptions that carry a one-line message meant for the user.

Anything raised as a :class:`VrpsamError` is a problem with the user's input (a file, an argument,
a checkpoint), not a bug: the CLI prints ``error: <message>`` and exits with status 2, no traceback.
"""

from __future__ import annotations


class VrpsamError(Exception):
    """A user-facing error. The message names the file or argument and what is wrong with it."""


class InputError(VrpsamError, ValueError):
    """An image, annotation, prompt or argument that cannot be used as given."""


class CheckpointError(VrpsamError):
    """A weights file that cannot be found, read, verified or loaded into the model."""


class DataError(VrpsamError):
    """A dataset folder, split, image or mask that is missing or malformed."""
