"""The kinds of failure a command ends in, each carrying its exit code (cli prints one line).

    lcr plan jobs/demo.toml --set sampling.temprature=1   # an InputError: exit 2, one line

0 done; 1 `StageFailure`, a stage ran and did not finish (merge incomplete, judge endpoint
down, a job of the local executor failed); 2 `InputError`, the configuration or an input is
wrong, or the disk refused a write (the line names the file, line or key, and the way on);
3 `LockHeld`, another process holds a lock (the line names it); 130 interrupted (Ctrl-C, in
cli). Each module's own error class subclasses one of these and the builtin it always was
(`ConfigError(InputError, ValueError)`), so `except ValueError` keeps working.
"""

import errno


class LcrError(Exception):
    """A failure the user can act on: printed as `lcr COMMAND: error: MESSAGE`, no traceback."""

    exit_code = 1
    prefix = "error: "  # before the message


class StageFailure(LcrError):
    """A stage ran and did not finish its work."""

    exit_code = 1


class InputError(LcrError):
    """The configuration, an input file or the disk is wrong; nothing written is lost."""

    exit_code = 2


class LockHeld(LcrError):
    """Another process holds the lock; the message names it (pid, host)."""

    exit_code = 3
    prefix = ""  # the message is a sentence about the other process, not an error of ours


INTERRUPTED = 130  # Ctrl-C: what was written is kept
# The disk, not the program, said no: the user can fix these and run again.
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def exit_code(e: BaseException) -> int | None:
    """The code `e` ends a command with, or None for a bug (which shows its traceback).

    A missing file the command was pointed at (the builtin FileNotFoundError) is an input, and
    so is a write the disk refused that no module turned into its own error."""
    if isinstance(e, LcrError):
        return e.exit_code
    if isinstance(e, FileNotFoundError) or (isinstance(e, OSError) and e.errno in DISK_ERRNOS):
        return InputError.exit_code  # the disk said no (read-only, full, not allowed), anywhere
    return None
