"""Who may call the server: TLS (and mutual TLS) credentials, and bearer tokens with scopes.

Tokens live in a YAML file as SHA-256 hashes, so the file can be read by the operator's tools
without handing out the tokens themselves; a token reaches the server only in a request's
`authorization: Bearer <token>` header. Health checks never need one."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import yaml

from featurestore.errors import FeatureStoreError

ALL = "*"


@dataclass(frozen=True)
class Grant:
    """What one token may do: read services, push to sources (ALL: every one), admin."""

    name: str
    read: frozenset[str] = field(default_factory=frozenset)
    push: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False

    def may_read(self, service: str) -> bool:
        """`service` "" is a feature list, which only a grant on every service may read."""
        return ALL in self.read or (bool(service) and service in self.read)

    def may_push(self, source: str) -> bool:
        return ALL in self.push or source in self.push


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed

    def server_credentials(self) -> grpc.ServerCredentials:
        cert, key = _read(self.cert, "--tls-cert"), _read(self.key, "--tls-key")
        ca = _read(self.client_ca, "--tls-client-ca") if self.client_ca else None
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                           require_client_auth=ca is not None)


def _read(path: Path, option: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FeatureStoreError(f"{option} {path}: cannot read it ({exc.strerror})") from exc


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "fst_" + secrets.token_urlsafe(32)


class Tokens:
    """The token file, loaded once: hash -> Grant."""

    def __init__(self, path: Path):
        self.path = path
        where = f"token file {path}"
        try:
            document = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise FeatureStoreError(f"{where}: cannot read it ({exc.strerror})") from exc
        except yaml.YAMLError as exc:
            raise FeatureStoreError(f"{where}: not valid YAML ({exc})") from exc
        entries = document.get("tokens") if isinstance(document, dict) else None
        if not isinstance(entries, list) or not entries:
            raise FeatureStoreError(f"{where}: expected `tokens:` with a list of entries "
                                    "(name, sha256, read, push, admin); `featurestore token` "
                                    "makes one")
        self.grants: dict[str, Grant] = {}
        for i, entry in enumerate(entries):
            digest, grant = _entry(entry, f"{where}, entry {i + 1}")
            if digest in self.grants:
                raise FeatureStoreError(f"{where}: entries {self.grants[digest].name!r} and "
                                        f"{grant.name!r} have the same sha256")
            self.grants[digest] = grant

    def check(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Grant:
        """The grant of the request's bearer token; raises Refused(UNAUTHENTICATED)."""
        header = next((v for k, v in metadata or () if k == "authorization"), None)
        if header is None:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          "this server needs a token: send `authorization: Bearer <token>` "
                          "(featurestore.Client(token=...) or FEATURESTORE_TOKEN)")
        text = header.decode() if isinstance(header, bytes) else header
        scheme, _, token = text.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED,
                          "the authorization header must be `Bearer <token>`")
        digest = token_hash(token.strip())
        for known, grant in self.grants.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                return grant
        raise Refused(grpc.StatusCode.UNAUTHENTICATED, "unknown token")


class Refused(FeatureStoreError):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


def _entry(entry: object, where: str) -> tuple[str, Grant]:
    if not isinstance(entry, dict):
        raise FeatureStoreError(f"{where}: expected a mapping with name, sha256, read, push, "
                                "admin")
    unknown = set(entry) - {"name", "sha256", "read", "push", "admin"}
    if unknown:
        raise FeatureStoreError(f"{where}: unknown keys {sorted(unknown)}; allowed: name, "
                                "sha256, read, push, admin")
    name, digest = entry.get("name"), entry.get("sha256")
    if not isinstance(name, str) or not name:
        raise FeatureStoreError(f"{where}: `name` is required (it names the caller in logs)")
    if not isinstance(digest, str) or len(digest) != 64 or \
            any(c not in "0123456789abcdef" for c in digest):
        raise FeatureStoreError(f"{where} ({name!r}): `sha256` must be the 64 lowercase hex "
                                "digits of the token's SHA-256 (never the token itself)")

    def names(key: str) -> frozenset[str]:
        value = entry.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FeatureStoreError(f"{where} ({name!r}): `{key}` must be a list of names, or "
                                    f"{ALL!r} for all")
        return frozenset(value)

    admin = entry.get("admin", False)
    if not isinstance(admin, bool):
        raise FeatureStoreError(f"{where} ({name!r}): `admin` must be true or false")
    return digest, Grant(name, names("read"), names("push"), admin)
