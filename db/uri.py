"""Database URIs in one place: the default, which URI wins, and how to read one.

Which URI a command uses, first match wins:

1. ``--uri`` on the command line;
2. the ``FLYWHEEL_DB_URI`` setting (environment or ``~/.flywheel.yaml``);
3. the campaign file's ``database.uri``;
4. :data:`~flywheel.settings.DEFAULT_URI`, the local server on 127.0.0.1:27118.

A loopback URI (every host is this machine) is one ``flywheel run`` serves itself, by
starting the local SecantusDB server on the URI's port.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from flywheel.settings import DEFAULT_URI

#: Database name when the URI names none.
DEFAULT_DATABASE = "flywheel"

# ``scheme://user:password@`` -- the password must never reach a log or an
# error message, but the user name helps when diagnosing auth problems.
_CREDENTIALS = re.compile(r"^(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*):[^@/]*@", re.I)


def resolve_uri(cli: str | None = None, campaign: str | None = None) -> str:
    """The URI a command uses (the rule in this module's docstring).

    Parameters
    ----------
    cli
        ``--uri`` given on the command line, if any.
    campaign
        The campaign file's ``database.uri``, if a campaign file was given.
    """
    from flywheel.settings import get_settings

    return cli or get_settings().DB_URI or campaign or DEFAULT_URI


def redact_uri(uri: str) -> str:
    """Return ``uri`` with any password replaced by ``***`` (safe to print)."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", uri)


def split_uri(uri: str) -> tuple[str, str]:
    """Return ``(uri, database name)``; the database defaults to ``flywheel``."""
    from pymongo.uri_parser import parse_uri

    database = parse_uri(uri).get("database") or DEFAULT_DATABASE
    return uri, database


def with_database(uri: str, database: str) -> str:
    """Return ``uri`` with its path set to ``database`` (query string kept)."""
    head, _, query = uri.partition("?")
    scheme, _, rest = head.partition("://")
    hosts = rest.split("/", 1)[0]
    out = f"{scheme}://{hosts}/{database}"
    return f"{out}?{query}" if query else out


def _hosts(uri: str) -> list[str]:
    return urlsplit(uri).netloc.rsplit("@", 1)[-1].split(",")


def _host_name(host: str) -> str:
    """``host:port`` or ``[v6]:port`` → the host alone."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or address, brackets allowed) is this machine."""
    host = host.strip("[]")
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_loopback_uri(uri: str) -> bool:
    """Whether every host in ``uri`` is this machine, by a name the local server
    answers on (127.0.0.1, localhost, ::1)."""
    if uri.startswith("mongodb+srv://"):
        return False
    return all(_host_name(h) in {"127.0.0.1", "localhost", "::1"} for h in _hosts(uri))


def uri_host(uri: str) -> str:
    """Host of the first host in ``uri`` (brackets of an IPv6 address removed)."""
    return _host_name(_hosts(uri)[0])


def uri_port(uri: str) -> int:
    """Port of the first host in ``uri`` (27017, MongoDB's, if absent)."""
    host = _hosts(uri)[0]
    tail = host.rsplit("]", 1)[-1] if host.startswith("[") else host
    return int(tail.rsplit(":", 1)[1]) if ":" in tail else 27017


def host_uri(host: str, port: int) -> str:
    """``mongodb://host:port`` (an IPv6 address in brackets)."""
    host = host.strip("[]")
    return f"mongodb://[{host}]:{port}" if ":" in host else f"mongodb://{host}:{port}"
