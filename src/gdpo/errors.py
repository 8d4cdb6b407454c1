"""Errors that mean "the user's input is wrong", as opposed to a bug in gdpo.

Contract: the message of a :class:`UserError` is ONE line that names the key, shows the
value, and says how to fix it (the valid choices, the nearest one). ``gdpo`` (``gdpo.cli``)
prints it as ``gdpo <command>: <message>`` on stderr and exits with code 2, without a
traceback (``gdpo --debug ...`` or ``GDPO_DEBUG=1`` shows the traceback too).

The subclasses also derive from the builtin the code raised before (``ValueError``,
``KeyError``), so ``except ValueError`` callers keep working; ``str()`` of a ``KeyError``
subclass is the plain message (no quotes added).
"""

from __future__ import annotations


class UserError(Exception):
    """Bad user input: a config key, a command-line value, a name, a data file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InputError(UserError, ValueError):
    """A value (or key) given by the user is invalid."""


class UnknownNameError(InputError, KeyError):
    """A name (reward, task, estimator, parameter) that is not registered."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class ParameterError(InputError, TypeError):
    """Parameters given to something that does not take them."""


def one_line(message: str) -> str:
    """``message`` with its lines joined by single spaces (what the CLI prints)."""
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())
