"""User-facing errors.

Every mistake a user can make (bad config key, missing file, malformed line, label mismatch)
raises a subclass of :class:`AdaptlabError`. The CLI prints the message without a traceback and
exits with code 2, so messages must say *where* (file:line or config key path) and *what to do*.
"""

from __future__ import annotations

from pathlib import Path


class AdaptlabError(Exception):
    """Base class of every error caused by user input rather than by a bug."""

    exit_code = 2


class ConfigError(AdaptlabError):
    """A config file or a ``key=value`` override is invalid."""


class DataError(AdaptlabError):
    """An input data file is missing, unreadable or malformed.

    ``path`` and ``line`` (1-based) locate the problem; they are prefixed to the message.
    """

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class ModelError(AdaptlabError):
    """A model directory is missing, incomplete or incompatible with the data."""


class RunDirError(AdaptlabError):
    """A run or output directory cannot be created without overwriting something."""


class StrategyError(ConfigError):
    """A tuning strategy does not fit the model, the task or another strategy; raised before step 0."""

    def __init__(self, strategy: str, reason: str):
        self.strategy = strategy
        super().__init__(f"strategy.{strategy}: {reason}")
