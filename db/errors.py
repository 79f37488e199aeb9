"""Exceptions for database access and the local SecantusDB server.

This module is deliberately light: it imports :mod:`pymongo` only inside
:func:`check_reachable`, so importing the exceptions costs nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from flywheel.db.uri import redact_uri

logger = logging.getLogger(__name__)

__all__ = [
    "DatabaseUnreachableError",
    "ServerError",
    "check_reachable",
    "redact_uri",
]



class ServerError(RuntimeError):
    """The local SecantusDB server could not be started, stopped or found.

    Parameters
    ----------
    message
        One-line description of what went wrong and what to do about it.
    log_tail
        The last lines of the server log, if there is one; appended to
        ``str(exc)`` so that test failures show why the server died.

    Attributes
    ----------
    message : str
        The one-line message (what command-line tools print).
    log_tail : str
        The server log tail, possibly empty.
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        self.message = message
        self.log_tail = log_tail
        text = message
        if log_tail.strip():
            text = f"{message}\n--- end of the server log ---\n{log_tail.rstrip()}"
        super().__init__(text)


class DatabaseUnreachableError(RuntimeError):
    """No MongoDB server answers at the configured URI.

    Parameters
    ----------
    uri
        The connection string that was tried (a password in it is redacted
        in the message).
    reason
        Optional short description of the underlying driver error.

    Attributes
    ----------
    uri : str
        The redacted URI.
    reason : str
        The underlying driver error, possibly empty.
    """

    def __init__(self, uri: str, reason: str = "") -> None:
        self.uri = redact_uri(uri)
        self.reason = reason
        detail = f" ({reason})" if reason else ""
        super().__init__(
            f"Cannot reach the MongoDB database at {self.uri}{detail}. "
            "Start the local server with `flywheel db start --dir <campaign dir>`, "
            "or set `database.uri` (or the FLYWHEEL_DB_URI environment variable) "
            "to a reachable MongoDB."
        )


def _short_reason(exc: BaseException) -> str:
    """Condense a pymongo error to one line.

    ``ServerSelectionTimeoutError`` messages embed the whole topology
    description, which is noise to a user; the first clause says enough.
    """
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    text = text.split(", Timeout:")[0]
    return text[:200]


def ping_error(uri: str, timeout_ms: int = 3000) -> str | None:
    """Ping a MongoDB server and describe the failure, if any.

    Parameters
    ----------
    uri
        MongoDB connection string.
    timeout_ms
        Server-selection and connect timeout, in milliseconds.

    Returns
    -------
    str or None
        ``None`` when ``ping`` succeeded, otherwise a one-line reason.
    """
    # Imported here so that importing the exceptions stays cheap.
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    client: MongoClient[dict[str, Any]] | None = None
    try:
        client = MongoClient(
            uri,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
        )
        client.admin.command("ping")
    except PyMongoError as exc:
        return _short_reason(exc)
    finally:
        if client is not None:
            client.close()
    return None


def check_reachable(uri: str, timeout_ms: int = 3000) -> None:
    """Raise :class:`DatabaseUnreachableError` unless ``uri`` answers ``ping``.

    Parameters
    ----------
    uri
        MongoDB connection string.
    timeout_ms
        How long to wait for a server, in milliseconds.

    Raises
    ------
    DatabaseUnreachableError
        If no server answered within ``timeout_ms``.
    """
    reason = ping_error(uri, timeout_ms)
    if reason is not None:
        logger.debug("database %s unreachable: %s", redact_uri(uri), reason)
        raise DatabaseUnreachableError(uri, reason)
