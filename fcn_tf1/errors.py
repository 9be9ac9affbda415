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


# Lines of a TensorFlow error message that say where, not what.
_TF_NOISE = ("Graph execution error", "Detected at node", "File ", "Node:", "[[", "Hint:",
             "Original stack trace")


def reason(err, limit=300):
    """An exception as one short line, for the end of a one-line message.

    A TensorFlow op error (it has ``error_code``) gives the first line of its
    message that says what went wrong, not "Graph execution error" or a stack
    frame; any other exception gives its whole message with the whitespace
    folded (library messages may span lines), or its type when it has none.
    """
    if hasattr(err, "error_code"):
        text = str(getattr(err, "message", None) or err)
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith(_TF_NOISE):
                return line[:limit]
        return type(err).__name__
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:limit]


class TrainingDiverged(FcnError):
    """The loss or the weights became NaN or Inf; nothing was saved after the last good
    checkpoint. Exit status 3, so a scheduler can tell it from bad input."""
    exit_code = 3
