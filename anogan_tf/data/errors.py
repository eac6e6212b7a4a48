"""The one exception type the data module raises for bad input.

Every message says what was received, what was expected and how to fix it,
and names the file or array involved, so a user never has to read a stack
trace to know what to change.
"""

__all__ = ["DataError"]


class DataError(ValueError):
    """Input data is missing, unreadable or malformed; the message says the fix."""
