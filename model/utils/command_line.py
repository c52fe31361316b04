"""The commands' shared way with mistakes: one line on stderr, exit 2."""
import argparse
import contextlib
import sys


class UsageError(ValueError):
    """A mistake on the command line."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with every mistake a :class:`UsageError` that
    :meth:`one_line_errors` tells in one line."""

    def error(self, message):
        raise UsageError(message)

    @contextlib.contextmanager
    def one_line_errors(self):
        """Inside, a UsageError prints ``PROG: error: MESSAGE`` (its first
        line) on stderr and exits with status 2."""
        try:
            yield
        except UsageError as err:
            print('{}: error: {}'.format(self.prog, str(err).splitlines()[0]),
                  file=sys.stderr)
            sys.exit(2)
