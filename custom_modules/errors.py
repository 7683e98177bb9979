"""The one error type for a mistake a user can fix (a wrong path, a missing file, a bad option):
the tools print it as one ``error:`` line and exit with status 2, without a traceback."""


class UserError(ValueError):
    pass
