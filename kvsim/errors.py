"""The one exception type for a person's mistake: the CLI prints its message and exits 2."""


class KvsimError(Exception):
    """Bad input: unknown name, malformed size, broken file, out-of-range parameter."""


class DoesNotFit(KvsimError):
    """The answer is "no": the configuration does not fit (the CLI prints it and exits 1)."""
