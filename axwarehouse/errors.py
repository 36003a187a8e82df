"""The one exception type the CLI turns into a one-line error and a non-zero exit."""


class AxwError(Exception):
    """A user-facing problem (bad input, missing data, unknown name).

    The message must be one line that names the problem; the CLI prints it as ``error: <message>``.
    """
