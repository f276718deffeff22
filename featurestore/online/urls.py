"""Online store URLs: the one parser of redis://, rediss://, unix:// and Redis Cluster
(redis+cluster://host:port,host:port,..., rediss+cluster:// with TLS) URLs into the settings
every Redis client here connects with (redis-py in online/store.py, the serving reader's own
client in online/redis_async.py), so the two agree on database, credentials and TLS; and the
password's one way out of messages (`where`, `scrub`).

The query options keep redis-py's names, so a URL means the same to redis-py as here. Unknown
options are refused rather than passed on, and no error here repeats a part of the URL that
might hold the password."""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from featurestore.errors import FeatureStoreError

TLS_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs",
               "ssl_check_hostname")
OPTIONS = ("db", *TLS_OPTIONS)
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
_OPTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Tls:
    """rediss:// options. The server's certificate is verified (against ssl_ca_certs, else the
    system's CAs) and its host name checked unless the URL says otherwise."""

    ca_certs: str | None = None
    certfile: str | None = None  # a client certificate, for servers that require one
    keyfile: str | None = None
    cert_reqs: str = "required"
    check_hostname: bool = True

    def context(self) -> ssl.SSLContext:
        """The client context redis-py builds from the same options."""
        context = ssl.create_default_context(cafile=self.ca_certs)
        context.check_hostname = self.check_hostname
        context.verify_mode = CERT_REQS[self.cert_reqs]
        if self.certfile:
            context.load_cert_chain(self.certfile, self.keyfile)
        return context


@dataclass(frozen=True)
class RedisSettings:
    """Where and how to connect. `where` is the URL without its password, for messages."""

    where: str
    host: str = "localhost"
    port: int = 6379
    path: str | None = None  # a unix socket, instead of host and port
    db: int = 0
    username: str | None = None  # an ACL user; None: the default user
    password: str | None = field(default=None, repr=False)
    tls: Tls | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)  # the password as written too
    cluster: tuple[tuple[str, int], ...] = ()  # a Redis Cluster's startup nodes (host, port)

    def scrub(self, text: str) -> str:
        """`text` (a Redis or socket error) with the password, decoded or as written in the
        URL, replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def auth(self) -> tuple[str, ...] | None:
        """The AUTH command redis-py sends on connecting, or None when it sends none."""
        if self.username:
            return ("AUTH", self.username, self.password or "")
        return ("AUTH", self.password) if self.password else None

    def node(self, host: str, port: int) -> RedisSettings:
        """The same credentials and TLS for one node of the cluster."""
        where = f"{'rediss' if self.tls else 'redis'}://{_host(host)}:{port}"
        return replace(self, where=where, host=host, port=port, cluster=())

    def redis_py(self) -> dict[str, Any]:
        """Keyword arguments of redis.Redis (or, for a cluster, of redis.RedisCluster but
        for its startup nodes) for these settings."""
        kwargs: dict[str, Any] = {"username": self.username, "password": self.password}
        if not self.cluster:
            kwargs["db"] = self.db
        if self.path is not None:
            return kwargs | {"unix_socket_path": self.path}
        kwargs |= {"host": self.host, "port": self.port}
        if self.tls is not None:
            kwargs |= {"ssl": True, "ssl_ca_certs": self.tls.ca_certs,
                       "ssl_certfile": self.tls.certfile, "ssl_keyfile": self.tls.keyfile,
                       "ssl_cert_reqs": self.tls.cert_reqs,
                       "ssl_check_hostname": self.tls.check_hostname}
        return kwargs


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def parse(url: str) -> RedisSettings:
    """The settings of redis://[[user]:password@]host[:port][/db][?options],
    rediss://... (TLS), unix://[[user]:password@]/socket/path[?db=N], or of a Redis Cluster:
    redis+cluster://[[user]:password@]host:port,host:port,...[?options] (any reachable
    nodes; the client learns the others from them), rediss+cluster://... with TLS. Raises
    FeatureStoreError naming the problem, never the password."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in CLUSTER_SCHEMES:
        return _cluster(scheme, url)
    if scheme not in ("redis", "rediss", "unix"):
        shown = f"{scheme}://" if _OPTION_NAME.fullmatch(scheme) else "a value without scheme"
        raise FeatureStoreError(f"online store URL must start with redis://, rediss://, "
                                f"unix:// or redis+cluster://, got {shown}")
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced [ ] around an IPv6 address
        raise _bad(scheme, "the host is not a name or an address") from None
    if "@" in parts.path + parts.query + parts.fragment or parts.fragment:
        raise _bad(scheme, "'/', '?', '#' or '@' after the host: percent-encode such "
                           "characters in the user name or password (%2F, %3F, %23, %40)")
    try:
        port = parts.port
    except ValueError:
        raise _bad(scheme, "the port is not a number between 0 and 65535") from None
    raw_password = parts.password
    password = unquote(raw_password) if raw_password is not None else None
    username = unquote(parts.username) if parts.username else None
    options = _options(scheme, parts.query)
    db = options.pop("db", None)
    if scheme == "unix":
        if not parts.path:
            raise _bad(scheme, "no socket path (unix:///path/to/redis.sock)")
        path, host = unquote(parts.path), None
    else:
        path, host = None, parts.hostname or "localhost"
        if parts.path.strip("/"):
            if db is not None:
                raise _bad(scheme, "the database is given twice, as the path and as ?db=")
            db = _number(scheme, "the path after the host (the database)",
                         parts.path.strip("/"))
    if username and password is None:
        password = ""  # an ACL user without a password (nopass): AUTH user "", as redis-py
    return RedisSettings(
        where=_where(scheme, username, raw_password is not None, host, port, path, db or 0),
        host=host or "localhost", port=port or 6379, path=path, db=db or 0, username=username,
        password=password, tls=_tls(scheme, options) if scheme == "rediss" else None,
        secrets=tuple(sorted({s for s in (password, raw_password) if s}, key=len, reverse=True)))


def _cluster(scheme: str, url: str) -> RedisSettings:
    """A cluster URL: each node of its comma-separated list read as a one-node URL of the
    plain scheme with the same credentials and options."""
    rest = url.split("://", 1)[1]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    netloc, after = rest[:end], rest[end:]
    userinfo, at, hosts = netloc.rpartition("@")
    if not hosts or "" in hosts.split(","):
        raise _bad(scheme, "no nodes: list them as host:port,host:port")
    plain = CLUSTER_SCHEMES[scheme]
    try:
        nodes = [parse(f"{plain}://{userinfo}{at}{host}{after}") for host in hosts.split(",")]
    except FeatureStoreError as exc:  # said of the node: say it of the cluster URL
        raise FeatureStoreError(str(exc).replace(f"{plain}://...", f"{scheme}://...", 1)
                                ) from None
    if nodes[0].db:
        raise _bad(scheme, "a Redis Cluster has only database 0")
    shown = nodes[0].where.split("://", 1)[1].rpartition("@")
    where = f"{scheme}://{shown[0]}{shown[1]}" + ",".join(
        f"{_host(n.host)}:{n.port}" for n in nodes)
    return replace(nodes[0], where=where, cluster=tuple((n.host, n.port) for n in nodes))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _where(scheme: str, username: str | None, has_password: bool, host: str | None,
           port: int | None, path: str | None, db: int) -> str:
    """The URL as parsed, with *** for the password."""
    userinfo = quote(username or "", safe="") + (":***" if has_password else "")
    userinfo += "@" if userinfo else ""
    if path is not None:
        return f"unix://{userinfo}{path}" + (f"?db={db}" if db else "")
    shown_host = f"[{host}]" if ":" in str(host) else host
    return f"{scheme}://{userinfo}{shown_host}" + (f":{port}" if port else "") + f"/{db}"


def _options(scheme: str, query: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name not in OPTIONS:
            shown = repr(name) if _OPTION_NAME.fullmatch(name) else "a query part"
            raise _bad(scheme, f"unknown option {shown}; the options are {', '.join(OPTIONS)}")
        if name in options:
            raise _bad(scheme, f"option {name!r} is given twice")
        if name in TLS_OPTIONS and scheme != "rediss":
            raise _bad(scheme, f"option {name!r} is a TLS option: use a rediss:// URL")
        options[name] = value
    if "db" in options:
        options["db"] = _number(scheme, "option 'db'", options["db"])
    return options


def _tls(scheme: str, options: dict[str, str]) -> Tls:
    for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if name in options and not Path(options[name]).is_file():
            raise _bad(scheme, f"option {name!r}: there is no file {options[name]}")
    if "ssl_keyfile" in options and "ssl_certfile" not in options:
        raise _bad(scheme, "option 'ssl_keyfile' needs 'ssl_certfile' (the client certificate)")
    cert_reqs = options.get("ssl_cert_reqs", "required")
    if cert_reqs not in CERT_REQS:
        raise _bad(scheme, f"option 'ssl_cert_reqs' is {cert_reqs!r}; it must be one of "
                           f"{', '.join(CERT_REQS)}")
    check = options.get("ssl_check_hostname", "false" if cert_reqs == "none" else "true")
    if check.lower() not in _BOOLEANS:
        raise _bad(scheme, f"option 'ssl_check_hostname' is {check!r}; it must be true or false")
    if _BOOLEANS[check.lower()] and cert_reqs == "none":
        raise _bad(scheme, "ssl_check_hostname=true needs a verified certificate: "
                           "ssl_cert_reqs=required or optional")
    return Tls(options.get("ssl_ca_certs"), options.get("ssl_certfile"),
               options.get("ssl_keyfile"), cert_reqs, _BOOLEANS[check.lower()])


def _number(scheme: str, what: str, text: str) -> int:
    if not text.isdigit():
        raise _bad(scheme, f"{what} must be a database number such as 0")
    return int(text)


def _bad(scheme: str, problem: str) -> FeatureStoreError:
    return FeatureStoreError(f"online store URL {scheme}://...: {problem} (set in "
                             "featurestore.yaml's online_store or FEATURESTORE_REDIS_URL)")
