"""The one error type users see.

Every problem with user input (a data file, a split list, a checkpoint, a
config) is raised as :class:`FcnError` with a single-line message that names
the file and says what is wrong. The command line prints it as
``fcn-tf1: error: <message>`` and exits with status 2, never a traceback.
"""


class FcnError(Exception):
    """A user-facing error: one line, names the offending file and the reason."""


class DataError(FcnError):
    """Bad or unreadable input data (images, label maps, split lists, HDF5)."""


class ConfigError(FcnError):
    """A config.json or a command-line combination that cannot be used."""
