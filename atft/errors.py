"""Errors and warnings of atft. Every input error names the problem and the fix."""

from __future__ import annotations


class AtftError(Exception):
    """Base class of atft's own errors."""


class InputError(AtftError):
    """Bad user input (file, columns, dtypes, keys). The CLI exits 2 with this message."""


class DataError(InputError):
    """The dataset violates the data contract (missing columns, duplicates, wrong dtypes...)."""


class OutputError(InputError, OSError):
    """An output cannot be written (read-only file system, no space, no permission, a directory
    where a file is wanted): the user's to fix (exit 2), and still an OSError for callers."""


class ConfigError(InputError, ValueError):
    """Unknown config key, wrong type or inconsistent values (also a ValueError: a bad argument)."""


class HorizonMismatchError(AtftError):
    """Configured horizons, targets, predictions or metrics disagree (never a silent skip)."""


class ShapeError(AtftError):
    """A tensor or feature count differs from what the config / checkpoint declares."""


class AtftWarning(UserWarning):
    """Warnings from atft itself; the test suite turns them into errors."""
