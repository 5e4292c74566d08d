"""The one exception type for input a user can fix."""


class UserError(Exception):
    """Bad input (config, data file, CLI argument).

    The CLI prints the message as a single line and exits non-zero, so the message must name
    both the problem and the fix.
    """
