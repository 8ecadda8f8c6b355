"""One exception type for every failure a user can cause: the CLI prints it as one line and exits 1."""


class EdgeViTError(Exception):
    """A problem with the user's input, data, weights or machine, phrased for the user."""
