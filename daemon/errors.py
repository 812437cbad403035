"""Errors, grouped by what the caller must do about them.

    StocksyncError
    ├── ConfigError            bad configuration: report every problem, exit 78
    │   └── StateUnusable      the state file or its directory cannot be used
    ├── InstanceLocked         another process holds the state file: exit 75
    └── ServiceError           a call to Accurate or Forstok failed
        ├── RetriableError     temporary: back off and try again
        │   ├── RateLimited        429 or a "too many requests" answer
        │   └── ServiceUnavailable 5xx, timeout, connection error
        ├── MalformedResponse  the answer lacks what we need: stop this unit of
        │                      work (its cursor stays put) and try it next time
        └── PermanentError     retrying the same request cannot help
            ├── CredentialError    token revoked or invalid: the operator acts
            └── NotFound           the record is gone (deleted document)

A ServiceError names the service and the endpoint path, never a full URL,
a query string or a header, so that its message is always safe to log.
"""

from __future__ import annotations


class StocksyncError(Exception):
    """Base class of every error stocksync raises on purpose."""


class ConfigError(StocksyncError):
    """The configuration has one or more problems, each naming its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class StateUnusable(ConfigError):
    """`state_path` names a file stocksync cannot use: corrupt, not a database,
    unreadable, or in a place that is not a writable directory.

    A ConfigError, so that it exits 78 like one: systemd does not restart on
    78 (RestartPreventExitStatus), and no restart can mend a broken file or a
    wrong path. Only the operator can, and the message says how.
    """

    def __init__(self, path: str, problem: str, action: str) -> None:
        self.path = path
        self.problem = problem
        self.action = action
        line = f"state_path: {path}: {problem}; {action}"
        self.problems = [line]
        # One line, not ConfigError's "invalid configuration:" list: the
        # file may be perfectly valid, and the state is what must be fixed.
        StocksyncError.__init__(self, line)


class InstanceLocked(StocksyncError):
    """Another stocksync process already works on this state file."""

    def __init__(self, lock_path: str, holder: str) -> None:
        self.lock_path = lock_path
        self.holder = holder
        super().__init__(
            f"state lock {lock_path} is held by {holder}. Only one process may "
            "sync a state file. To run a full sync in the running daemon, send "
            "it SIGHUP (systemctl reload stocksync); to run this command, stop "
            "that process first"
        )


class ServiceError(StocksyncError):
    """A request to an external service failed."""

    def __init__(self, service: str, endpoint: str, detail: str) -> None:
        self.service = service
        self.endpoint = endpoint
        self.detail = detail
        super().__init__(f"{service} {endpoint}: {detail}")


class RetriableError(ServiceError):
    """A temporary failure; `retry_after` is the server's wait, if it gave one."""

    def __init__(
        self,
        service: str,
        endpoint: str,
        detail: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(service, endpoint, detail)
        self.retry_after = retry_after


class RateLimited(RetriableError):
    """The service said we are too fast."""


class ServiceUnavailable(RetriableError):
    """A server error, a timeout or a broken connection."""


class MalformedResponse(ServiceError):
    """The body did not parse, or a field the client needs is missing."""


class MalformedRecord(MalformedResponse):
    """A well-formed answer about one record (an item) with a field that does
    not parse: that record's data is at fault, not the service, and other
    records can still be read."""


class PermanentError(ServiceError):
    """The service refused the request for a reason a retry cannot fix."""


class CredentialError(PermanentError):
    """The credential is revoked, invalid or lacks a scope."""

    def __init__(self, service: str, endpoint: str, detail: str, action: str) -> None:
        super().__init__(service, endpoint, f"{detail}; {action}")
        self.action = action


class NotFound(PermanentError):
    """The record does not exist (any more)."""
