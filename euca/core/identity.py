"""Accounts, users and access keys (IAM-lite), kept in the state store.

The CLC administers them; every role that authenticates users looks keys up here.
The `eucalyptus` account is the cloud administrators' account, as in Eucalyptus.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from euca.core.iam import schema as iam_schema
from euca.core.iam import sessions
from euca.core.iam.changes import ChangeCounter
from euca.core.store import Store, Tx

T = TypeVar("T")

ADMIN_ACCOUNT = "eucalyptus"
ADMIN_USER = "admin"

SCHEMA = [
    """
    CREATE TABLE accounts (
        account_id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        canonical_id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL
    );
    CREATE TABLE users (
        account_id TEXT NOT NULL REFERENCES accounts(account_id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        user_id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        PRIMARY KEY (account_id, name)
    );
    CREATE TABLE access_keys (
        access_key_id TEXT PRIMARY KEY,
        secret_key TEXT NOT NULL,
        account_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL,
        FOREIGN KEY (account_id, user_name) REFERENCES users(account_id, name) ON DELETE CASCADE
    );
    """,
    # Users' X.509 signing certificates (IAM's UploadSigningCertificate; Eucalyptus issued them with the
    # credentials). Bundle manifests are verified against them. Only certificates: never a private key.
    """
    CREATE TABLE signing_certificates (
        certificate_id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL,
        user_name TEXT NOT NULL,
        pem TEXT NOT NULL,
        fingerprint TEXT NOT NULL UNIQUE,
        active INTEGER NOT NULL DEFAULT 1,
        created REAL NOT NULL,
        FOREIGN KEY (account_id, user_name) REFERENCES users(account_id, name) ON DELETE CASCADE
    );
    CREATE INDEX signing_certificates_account ON signing_certificates(account_id, active);
    """,
]

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
_USER_RE = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,64}$")


class IdentityError(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    """Who made a request."""

    account_id: str
    account_name: str
    canonical_id: str
    user_name: str
    access_key_id: str
    # The user's IAM unique id and path (GetCallerIdentity, ARNs).
    user_id: str = ""
    path: str = "/"
    # Temporary credentials (STS): an assumed role's name and session name; a GetSessionToken session has
    # neither but `temporary` set.
    role_name: str | None = None
    session_name: str | None = None
    role_id: str = ""
    temporary: bool = False

    @property
    def is_cloud_admin(self) -> bool:
        return self.account_name == ADMIN_ACCOUNT and self.role_name is None

    @property
    def is_account_admin(self) -> bool:
        """The account's `admin` user (or a session of it): everything in its account is allowed."""
        return self.user_name == ADMIN_USER and self.role_name is None

    @property
    def arn(self) -> str:
        if self.role_name is not None:
            return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.session_name}"
        return f"arn:aws:iam::{self.account_id}:user{self.path}{self.user_name}"


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    secret_key: str
    active: bool
    principal: Principal
    # Temporary credentials: the session token that must come with them, and when they expire (epoch seconds).
    session_token: str | None = None
    expires: float | None = None


@dataclass(frozen=True)
class Account:
    account_id: str
    name: str
    canonical_id: str


@dataclass(frozen=True)
class SigningCertificate:
    certificate_id: str
    account_id: str
    user_name: str
    pem: str
    fingerprint: str  # SHA-256 hex of the DER
    active: bool
    created: float


def _new_certificate_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(32))


def _new_access_key_id() -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
    return "AKI" + "".join(secrets.choice(alphabet) for _ in range(17))


def _new_secret() -> str:
    return secrets.token_urlsafe(30)[:40]


# The name identity changes are announced under through the store (to processes on other hosts).
CHANGES = "identity"


class Identity:
    # Looked-up keys are cached: every request needs one. Any change to identity (a key deleted or disabled, in
    # any process) moves this host's change counter, which drops the cache at once, and is announced through
    # a shared PostgreSQL store to other hosts (heard as soon as its notice arrives); the time limit only
    # bounds how long a key could linger where a notice was never heard (a listener cut off unnoticed).
    CACHE_SECONDS = 60.0

    def __init__(self, store: Store):
        self.store = store
        store.migrate("identity", SCHEMA)
        store.migrate("iam", iam_schema.SCHEMA)
        self.changes = ChangeCounter(_changes_path(store))
        # Changes committed on other hosts (a PostgreSQL store); None where the store is this host's alone.
        self.remote = store.watch(CHANGES)
        # What time it is for temporary credentials (tests move it instead of sleeping).
        self.clock: Callable[[], float] = time.time
        self._cache: dict[str, tuple[float, AccessKey | None]] = {}
        # Parsed identity policies per principal (euca.core.authorize), dropped with the keys on any change.
        self.policy_cache: dict[tuple[str, str, str], Any] = {}
        self._used: dict[str, float] = {}

    # A key's last use is written at most this often per process (GetAccessKeyLastUsed is coarse in AWS too:
    # hours), so recording it costs one store write per key per interval, not one per request.
    LAST_USED_INTERVAL = 300.0

    async def note_used(self, principal: Principal, service: str, region: str) -> None:
        """A request signed with the principal's key was verified (sessions are not recorded)."""
        if principal.temporary:
            return
        now = self.clock()
        akid = principal.access_key_id
        last = self._used.get(akid)
        if last is not None and now - last < self.LAST_USED_INTERVAL:
            return
        if len(self._used) > 10000:
            self._used.clear()
        self._used[akid] = now
        await self.store.write(
            lambda tx: tx.execute(
                "UPDATE access_keys SET last_used=?, last_used_service=?, last_used_region=? WHERE access_key_id=?",
                (now, service, region, akid),
            )
        )

    async def change(self, fn: Callable[[Tx], T]) -> T:
        """A change to identity: `fn` in a durable write that announces it to other hosts, then every process
        of this host drops what it cached."""
        result = await self.store.write(lambda tx: _announced(tx, fn), durable=True)
        self.changed()
        return result

    def change_sync(self, fn: Callable[[Tx], T]) -> T:
        """`change` for the CLI and start-up."""
        result = self.store.write_sync(lambda tx: _announced(tx, fn), durable=True)
        self.changed()
        return result

    def changed(self) -> None:
        """Identity changed (keys, users, policies): every process of this host drops what it cached. (Other
        hosts hear of it only from the write that announced it: `change`.)"""
        self.changes.bump()
        self.forget_cached()

    def check_changes(self) -> None:
        local = self.changes.changed()
        remote = self.remote is not None and self.remote.changed()
        if local or remote:
            self.forget_cached()

    # -- lookups used on every request ---------------------------------------------------------

    async def access_key(self, access_key_id: str) -> AccessKey | None:
        self.check_changes()
        now = time.monotonic()
        hit = self._cache.get(access_key_id)
        if hit is not None and now - hit[0] < self.CACHE_SECONDS:
            return hit[1]
        key = await self.store.read(lambda tx: _load_key(tx, access_key_id))
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[access_key_id] = (now, key)
        return key

    async def account_by_id(self, account_id: str) -> Account | None:
        return await self.store.read(lambda tx: _load_account(tx, "account_id", account_id))

    async def account_by_canonical_id(self, canonical_id: str) -> Account | None:
        return await self.store.read(lambda tx: _load_account(tx, "canonical_id", canonical_id))

    async def account_by_name(self, name: str) -> Account | None:
        return await self.store.read(lambda tx: _load_account(tx, "name", name))

    async def account_certificates(self, account_id: str) -> list[SigningCertificate]:
        """The active signing certificates of every user of the account (what a bundle may be signed with)."""
        return await self.store.read(
            lambda tx: _load_certificates(tx, "account_id=? AND active=1", (account_id,))
        )

    async def account_access_keys(self, account_id: str) -> list[AccessKey]:
        """The account's active access keys, oldest first."""

        def fn(tx: Tx) -> list[AccessKey]:
            ids = [
                r[0]
                for r in tx.all(
                    "SELECT access_key_id FROM access_keys WHERE account_id=? AND active=1 ORDER BY created",
                    (account_id,),
                )
            ]
            return [k for k in (_load_key(tx, i) for i in ids) if k is not None]

        return await self.store.read(fn)

    def forget_cached(self) -> None:
        self._cache.clear()
        self.policy_cache.clear()

    # -- administration (synchronous: CLI and first start) -------------------------------------

    def create_account(self, name: str) -> Account:
        return self.store.write_sync(lambda tx: create_account_tx(tx, name))

    def create_user(self, account_name: str, user_name: str) -> None:
        if not _USER_RE.match(user_name):
            raise IdentityError(f"invalid user name {user_name!r}")

        def fn(tx: Tx) -> None:
            account_id = _account_id(tx, account_name)
            if tx.one("SELECT 1 FROM users WHERE account_id=? AND name=?", (account_id, user_name)):
                raise IdentityError(f"user {user_name} already exists in account {account_name}")
            _insert_user(tx, account_id, user_name)

        self.store.write_sync(fn)

    def create_access_key(self, account_name: str, user_name: str = ADMIN_USER) -> AccessKey:
        def fn(tx: Tx) -> str:
            account_id = _account_id(tx, account_name)
            if not tx.one("SELECT 1 FROM users WHERE account_id=? AND name=?", (account_id, user_name)):
                raise IdentityError(f"no user {user_name} in account {account_name}")
            akid = _new_access_key_id()
            tx.execute(
                "INSERT INTO access_keys(access_key_id, secret_key, account_id, user_name, active, created) "
                "VALUES(?,?,?,?,1,?)",
                (akid, _new_secret(), account_id, user_name, time.time()),
            )
            return akid

        akid = self.store.write_sync(fn)
        key = self.store.read_sync(lambda tx: _load_key(tx, akid))
        assert key is not None
        return key

    def set_access_key_active(self, access_key_id: str, active: bool) -> None:
        def fn(tx: Tx) -> None:
            if not tx.execute(
                "UPDATE access_keys SET active=? WHERE access_key_id=?", (1 if active else 0, access_key_id)
            ):
                raise IdentityError(f"no access key {access_key_id}")

        self.change_sync(fn)

    def delete_access_key(self, access_key_id: str) -> None:
        def fn(tx: Tx) -> None:
            if not tx.execute("DELETE FROM access_keys WHERE access_key_id=?", (access_key_id,)):
                raise IdentityError(f"no access key {access_key_id}")

        self.change_sync(fn)

    def list_accounts(self) -> list[Account]:
        rows = self.store.read_sync(
            lambda tx: tx.all("SELECT account_id, name, canonical_id FROM accounts ORDER BY name")
        )
        return [Account(r["account_id"], r["name"], r["canonical_id"]) for r in rows]

    def list_users(self, account_name: str) -> list[str]:
        def fn(tx: Tx) -> list[str]:
            account_id = _account_id(tx, account_name)
            return [
                r[0] for r in tx.all("SELECT name FROM users WHERE account_id=? ORDER BY name", (account_id,))
            ]

        return self.store.read_sync(fn)

    def list_access_keys(self, account_name: str | None = None) -> list[AccessKey]:
        def fn(tx: Tx) -> list[AccessKey]:
            if account_name is None:
                ids = [r[0] for r in tx.all("SELECT access_key_id FROM access_keys ORDER BY created")]
            else:
                account_id = _account_id(tx, account_name)
                ids = [
                    r[0]
                    for r in tx.all(
                        "SELECT access_key_id FROM access_keys WHERE account_id=? ORDER BY created",
                        (account_id,),
                    )
                ]
            return [k for k in (_load_key(tx, i) for i in ids) if k is not None]

        return self.store.read_sync(fn)

    def add_certificate(self, account_name: str, user_name: str, cert_pem: bytes) -> SigningCertificate:
        """Record a user's X.509 signing certificate (PEM). The private key stays with the user."""
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as e:
            raise IdentityError(f"not a PEM X.509 certificate: {e}") from e
        pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
        fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

        def fn(tx: Tx) -> str:
            account_id = _account_id(tx, account_name)
            if not tx.one("SELECT 1 FROM users WHERE account_id=? AND name=?", (account_id, user_name)):
                raise IdentityError(f"no user {user_name} in account {account_name}")
            if tx.one("SELECT 1 FROM signing_certificates WHERE fingerprint=?", (fingerprint,)):
                raise IdentityError("this certificate is already registered")
            certificate_id = _new_certificate_id()
            tx.execute(
                "INSERT INTO signing_certificates(certificate_id, account_id, user_name, pem, fingerprint, active, "
                "created) VALUES(?,?,?,?,?,1,?)",
                (certificate_id, account_id, user_name, pem, fingerprint, time.time()),
            )
            return certificate_id

        certificate_id = self.store.write_sync(fn)
        found = self.store.read_sync(lambda tx: _load_certificates(tx, "certificate_id=?", (certificate_id,)))
        return found[0]

    def list_certificates(
        self, account_name: str | None = None, user_name: str | None = None
    ) -> list[SigningCertificate]:
        def fn(tx: Tx) -> list[SigningCertificate]:
            if account_name is None:
                return _load_certificates(tx, "1=1", ())
            account_id = _account_id(tx, account_name)
            if user_name is None:
                return _load_certificates(tx, "account_id=?", (account_id,))
            return _load_certificates(tx, "account_id=? AND user_name=?", (account_id, user_name))

        return self.store.read_sync(fn)

    def set_certificate_active(self, certificate_id: str, active: bool) -> None:
        def fn(tx: Tx) -> None:
            if not tx.execute(
                "UPDATE signing_certificates SET active=? WHERE certificate_id=?",
                (1 if active else 0, certificate_id),
            ):
                raise IdentityError(f"no certificate {certificate_id}")

        self.store.write_sync(fn)

    def delete_certificate(self, certificate_id: str) -> None:
        def fn(tx: Tx) -> None:
            if not tx.execute("DELETE FROM signing_certificates WHERE certificate_id=?", (certificate_id,)):
                raise IdentityError(f"no certificate {certificate_id}")

        self.store.write_sync(fn)

    def ensure_admin(self) -> tuple[Account, AccessKey, bool]:
        """The `eucalyptus` account with one active admin key; created on first start. Returns (.., created)."""
        accounts = {a.name: a for a in self.list_accounts()}
        created = False
        if ADMIN_ACCOUNT not in accounts:
            accounts[ADMIN_ACCOUNT] = self.create_account(ADMIN_ACCOUNT)
            created = True
        account = accounts[ADMIN_ACCOUNT]
        keys = [
            k
            for k in self.list_access_keys(ADMIN_ACCOUNT)
            if k.active and k.principal.user_name == ADMIN_USER
        ]
        if not keys:
            keys = [self.create_access_key(ADMIN_ACCOUNT, ADMIN_USER)]
            created = True
        return account, keys[0], created


def check_account_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise IdentityError(f"invalid account name {name!r}: lowercase letters, digits, '.' and '-'")


def create_account_tx(tx: Tx, name: str) -> Account:
    """A new account with its `admin` user (no access key)."""
    check_account_name(name)
    if tx.one("SELECT 1 FROM accounts WHERE name=?", (name,)):
        raise IdentityError(f"account {name} already exists")
    while True:
        account_id = f"{secrets.randbelow(10**12):012d}"
        if not tx.one("SELECT 1 FROM accounts WHERE account_id=?", (account_id,)):
            break
    canonical_id = secrets.token_hex(32)
    tx.execute(
        "INSERT INTO accounts(account_id, name, canonical_id, created) VALUES(?,?,?,?)",
        (account_id, name, canonical_id, time.time()),
    )
    _insert_user(tx, account_id, ADMIN_USER)
    return Account(account_id, name, canonical_id)


def list_accounts_tx(tx: Tx) -> list[Account]:
    rows = tx.all("SELECT account_id, name, canonical_id FROM accounts ORDER BY name")
    return [Account(r["account_id"], r["name"], r["canonical_id"]) for r in rows]


def find_account_tx(tx: Tx, name_or_id: str) -> Account | None:
    return _load_account(tx, "name", name_or_id) or _load_account(tx, "account_id", name_or_id)


# What an account may still hold when it is deleted without Recursive: only its admin user.
_ACCOUNT_CONTENTS = (
    ("SELECT 1 FROM users WHERE account_id=? AND name<>'admin'", "users"),
    ("SELECT 1 FROM iam_groups WHERE account_id=?", "groups"),
    ("SELECT 1 FROM iam_roles WHERE account_id=?", "roles"),
    ("SELECT 1 FROM iam_policies WHERE account_id=?", "policies"),
    ("SELECT 1 FROM iam_instance_profiles WHERE account_id=?", "instance profiles"),
)


def delete_account_tx(tx: Tx, name: str, recursive: bool) -> Account:
    """Delete an account and everything of its identity (users, keys, certificates, groups, policies, roles,
    sessions: the tables cascade). Without `recursive`, only an account that holds nothing but its admin user.
    Raises LookupError (no such account), PermissionError (the cloud administrators' account) or
    IdentityError (not empty)."""
    account = _load_account(tx, "name", name)
    if account is None:
        raise LookupError(name)
    if account.name == ADMIN_ACCOUNT:
        raise PermissionError(name)
    if not recursive:
        for sql, what in _ACCOUNT_CONTENTS:
            if tx.one(sql, (account.account_id,)):
                raise IdentityError(
                    f"Account {name} still has {what}; delete them first or ask for Recursive."
                )
    tx.execute("DELETE FROM accounts WHERE account_id=?", (account.account_id,))
    return account


def _announced(tx: Tx, fn: Callable[[Tx], T]) -> T:
    result = fn(tx)
    tx.announce(CHANGES)
    return result


def _changes_path(store: Store) -> Path | None:
    if store.path == ":memory:" or store.path.startswith("file:"):
        return None
    return Path(store.path + ".identity-changes")


def _insert_user(tx: Tx, account_id: str, name: str) -> None:
    tx.execute(
        "INSERT INTO users(account_id, name, user_id, created) VALUES(?,?,?,?)",
        (account_id, name, "AID" + secrets.token_hex(9).upper(), time.time()),
    )


def _account_id(tx: Tx, account_name: str) -> str:
    account_id = tx.scalar("SELECT account_id FROM accounts WHERE name=?", (account_name,))
    if account_id is None:
        raise IdentityError(f"no account {account_name}")
    return str(account_id)


def _load_account(tx: Tx, column: str, value: str) -> Account | None:
    assert column in ("account_id", "canonical_id", "name")
    row = tx.one(f"SELECT account_id, name, canonical_id FROM accounts WHERE {column}=?", (value,))
    return None if row is None else Account(row["account_id"], row["name"], row["canonical_id"])


def _load_key(tx: Tx, access_key_id: str) -> AccessKey | None:
    if access_key_id.startswith(sessions.KEY_PREFIX):
        return _load_session(tx, access_key_id)
    row = tx.one(
        "SELECT k.access_key_id, k.secret_key, k.active, k.user_name, a.account_id, a.name, a.canonical_id, "
        "u.user_id, u.path FROM access_keys k JOIN accounts a ON a.account_id = k.account_id "
        "JOIN users u ON u.account_id = k.account_id AND u.name = k.user_name WHERE k.access_key_id=?",
        (access_key_id,),
    )
    if row is None:
        return None
    principal = Principal(
        account_id=row["account_id"],
        account_name=row["name"],
        canonical_id=row["canonical_id"],
        user_name=row["user_name"],
        access_key_id=row["access_key_id"],
        user_id=row["user_id"],
        path=row["path"],
    )
    return AccessKey(row["access_key_id"], row["secret_key"], bool(row["active"]), principal)


def _load_session(tx: Tx, access_key_id: str) -> AccessKey | None:
    session = sessions.load(tx, access_key_id)
    if session is None:
        return None
    account = _load_account(tx, "account_id", session.account_id)
    if account is None:
        return None
    user = tx.one(
        "SELECT user_id, path FROM users WHERE account_id=? AND name=?",
        (session.account_id, session.user_name),
    )
    principal = Principal(
        account_id=account.account_id,
        account_name=account.name,
        canonical_id=account.canonical_id,
        user_name=session.user_name,
        access_key_id=access_key_id,
        user_id=user["user_id"] if user is not None else "",
        path=user["path"] if user is not None else "/",
        role_name=session.role_name,
        session_name=session.session_name,
        role_id=session.role_id,
        temporary=True,
    )
    return AccessKey(access_key_id, session.secret_key, True, principal, session.token, session.expires)


def _load_certificates(tx: Tx, where: str, params: tuple[str, ...]) -> list[SigningCertificate]:
    rows = tx.all(
        "SELECT certificate_id, account_id, user_name, pem, fingerprint, active, created FROM signing_certificates "
        f"WHERE {where} ORDER BY created",
        params,
    )
    return [
        SigningCertificate(
            r["certificate_id"],
            r["account_id"],
            r["user_name"],
            r["pem"],
            r["fingerprint"],
            bool(r["active"]),
            r["created"],
        )
        for r in rows
    ]
