"""SIGINT/SIGTERM as a flag: long loops check it and stop at a safe point.

Used by the trainers (save a checkpoint at the current step, exit 0) and by
the local cluster launcher (stop every task in order). Kept free of
TensorFlow so the launcher starts fast.
"""
import signal


class StopRequest:
    """A context manager that turns SIGINT/SIGTERM into a flag.

    Inside the ``with`` block the two signals set ``signal_name`` (e.g.
    "SIGTERM") instead of killing the process; calling the object tells
    whether one arrived. The previous handlers come back on exit. Outside the
    main thread signals cannot be caught and are left alone.
    """

    def __init__(self):
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def __call__(self):
        return self.signal_name is not None
