"""The one exception type that the command line turns into a one-line error and a non-zero exit."""


class HpcdiffError(Exception):
    """A user-facing error: bad input, bad config, missing file. The message is one line that names
    the file or key and the problem; the CLI prints it as ``hpcdiff: error: <message>``."""
