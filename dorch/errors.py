"""dorch's one error vocabulary: how a process ends (``ExitCode``) and the root of its errors.

Every error dorch raises on purpose is a ``DorchError``, and its ``exit_code`` says how the
process should end when the error reaches the top: the CLI prints the text and exits with it,
a worker logs it and exits with it (systemd restarts a worker after 75, never after 78).
The class attribute is the default; a few errors decide per instance (an unknown Discord
channel is a configuration error, an unknown message is not). The bases group, the
``exit_code`` decides.

Our exception hierarchy (exit code; where it lives):

* DorchError ................... 75  anything dorch gives up on; temporary unless it says otherwise
  x ConfigError ................ 78  configuration is wrong: restarting cannot help (also dorch.config)
    + SecretError .............. 78  dorch.secrets
      - SecretNotFound
      - KeyringUnavailable
    + ExecutorConfigError ...... 78  dorch.executors
    + TemplateError ............ 78  dorch.executors.command ([executor.command] argv)
    + EnvError ................. 78  dorch.runtime.process (pass_env, extra)
    + SandboxError ............. 78  dorch.runtime.sandbox
    + BusConfigError ........... 78  dorch.bus (also a BusError)
  x InputError ................. 64  input the user must fix
    + TaskError ................ 64  dorch.model
      - Rejected ............... 64  dorch.bus.discord.intake: a task message as written
  x BusError ................... 75  dorch.bus: the queue cannot be used right now
    + BusConfigError ........... 78
    + OutboxFull ............... 75  dorch.bus.discord.outbox
  x PermanentError ............. 1   dorch.bus.discord.outbox: an outbox item retrying cannot help
  x DiscordError ............... 75  dorch.discord.errors: the REST client gives up
    + DiscordHTTPError ......... 75
      - BadRequest
        · ThreadAlreadyExists
      - Unauthorized ........... 78
      - Forbidden .............. 78
      - NotFound ............... 75, or 78 for an unknown channel or guild
      - UnknownRoute ........... 78
      - RateLimited
      - ServerError
    + DiscordConnectionError
    + CloudflareBan
    + TooManyInvalidRequests
  x NothingToStop .............. 1   dorch.runtime.stopper: `dorch stop` found no workers

This module imports nothing of dorch, so every layer can import it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """How a dorch command or worker ends (sysexits.h numbers where one fits).

    The CLI's ``--help`` lists them from here, and the README's table follows it.
    """

    OK = 0
    FAILED = 1  # the task failed or was not found (and other plain failures)
    USAGE = 2  # bad command line
    DATAERR = 64  # bad task input (EX_DATAERR)
    TEMPFAIL = 75  # temporary failure: try again later (EX_TEMPFAIL)
    CONFIG = 78  # configuration error: fix it, retrying cannot help (EX_CONFIG)
    INTERRUPTED = 130  # stopped by Ctrl-C (128 + SIGINT)

    @property
    def meaning(self) -> str:
        """What the code tells a user, as ``--help`` and the README say it."""
        return _MEANINGS[self]


_MEANINGS = {
    ExitCode.OK: "ok",
    ExitCode.FAILED: "the task failed or was not found",
    ExitCode.USAGE: "usage error",
    ExitCode.DATAERR: "bad task input",
    ExitCode.TEMPFAIL: "temporary failure (try again later)",
    ExitCode.CONFIG: "configuration error",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


class DorchError(Exception):
    """The root of dorch's errors. Temporary (75) unless a subclass or the instance says
    otherwise: what is not known to be permanent is worth another try."""

    exit_code: ExitCode = ExitCode.TEMPFAIL


class ConfigError(DorchError):
    """A configuration mistake; the text names the file, the key (or the missing tool or
    credential) and what to do. Restarting cannot help."""

    exit_code = ExitCode.CONFIG


class InputError(DorchError):
    """Input the user must fix (a task as written cannot run); the text says how."""

    exit_code = ExitCode.DATAERR
