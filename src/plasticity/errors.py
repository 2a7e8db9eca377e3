"""User-facing errors: the CLI prints them as one line and exits with code 2."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (config, data, checkpoint). Printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(UserError):
    """A config key is unknown, of the wrong type, or has an impossible value."""

    def __init__(self, key: str, problem: str):
        self.key = key
        self.problem = problem
        super().__init__(f"config error: {key}: {problem}")


class DataError(UserError):
    """A data file or field is missing, empty or malformed."""


class CorruptFileError(DataError, ValueError):
    """An artifact of ours (summary.json, study.json, ...) that does not parse: edited or damaged. One line; still a
    ValueError for callers that treat any unparsable file as absent."""


class CheckpointError(UserError):
    """A checkpoint is missing, incomplete, tampered with, or of another architecture."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient."""

    def __init__(self, step: int, what: str, value: float):
        self.step = step
        self.what = what
        self.value = value
        super().__init__(f"diverged at step {step}: {what} = {value}")


class InterruptedRun(Exception):
    """A run stopped by a signal (SIGTERM/SIGINT) after saving a checkpoint; it resumes from there."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum
        super().__init__(f"interrupted by signal {signum} at step {step}")
