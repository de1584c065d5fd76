"""Altaviz's exception hierarchy.

Every error Altaviz raises on purpose derives from :class:`AltavizError`, so the CLI can print
one clear line for it (and the cause chain) instead of a traceback. Errors are split into
*terminal* (retrying cannot help: bad configuration, a malformed rule file) and *transient*
(a database or server that may come back): activities map the first to non-retryable
Temporal failures and let the retry policy handle the second.
"""

from __future__ import annotations


class AltavizError(Exception):
    """Altaviz failed; the message says what and how to fix it."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class TerminalError(AltavizError):
    """The operation cannot succeed by retrying; fix the input or configuration."""


class TransientError(AltavizError):
    """A dependency is unavailable for now; retrying later may succeed."""


class ConfigError(TerminalError):
    """The configuration is invalid: check the ALTAVIZ_* environment and the --config file."""


class ServiceError(TransientError):
    """An embedded or external service could not be started or reached."""


class MigrationError(TerminalError):
    """A database migration failed and was rolled back."""


class RuleError(TerminalError):
    """A rule file is invalid."""


class TenantError(TerminalError):
    """The request names an organization it may not act for."""


class InputError(TerminalError):
    """A command-line argument or input file is invalid."""
