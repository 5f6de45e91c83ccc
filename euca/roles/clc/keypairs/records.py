"""The clc_keypairs table and the key rules: the only module that reads or writes key pairs.

Fingerprints are computed as EC2 computes them, so users can compare them with their own tools:
- a key EC2 created (RSA): SHA-1 of the private key in PKCS#8 DER, colon-separated hex;
- an imported RSA key: MD5 of the public key in DER (SubjectPublicKeyInfo), colon-separated hex;
- ED25519 (created or imported): base64 SHA-256 of the OpenSSH public key blob, as OpenSSH prints it.
Only the public half is kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
import struct
import time
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from euca.core.store import Tx
from euca.protocol.ec2.wire import Ec2Error
from euca.roles.clc.tags import records as tags

MAX_NAME_LENGTH = 255
RSA_BITS = 2048


@dataclass(frozen=True)
class KeyPairRecord:
    key_pair_id: str
    name: str
    fingerprint: str
    key_type: str
    public_key: str  # OpenSSH format, no comment
    created: float
    tags: dict[str, str]


def colon_hex(digest: bytes) -> str:
    return ":".join(f"{b:02x}" for b in digest)


def new_key_pair_id() -> str:
    return "key-" + secrets.token_hex(9)[:17]


def _openssh_public(key: rsa.RSAPublicKey | ed25519.Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode(
        "ascii"
    )


def _ed25519_fingerprint(key: ed25519.Ed25519PublicKey) -> str:
    blob = base64.b64decode(_openssh_public(key).split()[1])
    return base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii")


@dataclass(frozen=True)
class GeneratedKey:
    private_pem: str
    public_openssh: str
    fingerprint: str


def generate_key(key_type: str) -> GeneratedKey:
    """A new key pair as EC2 hands it out (CPU-heavy for RSA: run it in a worker thread)."""
    if key_type == "ed25519":
        ed = ed25519.Ed25519PrivateKey.generate()
        pem = ed.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode("ascii")
        return GeneratedKey(pem, _openssh_public(ed.public_key()), _ed25519_fingerprint(ed.public_key()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode("ascii")
    return GeneratedKey(
        pem.rstrip("\n"), _openssh_public(key.public_key()), colon_hex(hashlib.sha1(pkcs8).digest())
    )


def load_public_key(material: bytes) -> tuple[str, str, str]:
    """An imported public key (OpenSSH, SSH2/RFC 4716, PEM or base64 DER) -> (type, OpenSSH text, fingerprint)."""
    key = _parse_public_key(material.strip())
    if isinstance(key, rsa.RSAPublicKey):
        if not 1024 <= key.key_size <= 16384:
            raise Ec2Error("InvalidKey.Format", f"RSA keys of {key.key_size} bits are not supported")
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return "rsa", _openssh_public(key), colon_hex(hashlib.md5(der).digest())
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", _openssh_public(key), _ed25519_fingerprint(key)
    raise Ec2Error("InvalidKey.Format", "Only RSA and ED25519 public keys are supported")


def _parse_public_key(text: bytes) -> object:
    bad = Ec2Error("InvalidKey.Format", "Key is not in valid OpenSSH public key format")
    try:
        if text.startswith(b"ssh-"):
            fields = text.split()
            if len(fields) < 2:
                raise bad
            return serialization.load_ssh_public_key(fields[0] + b" " + fields[1])
        if text.startswith(b"---- BEGIN SSH2 PUBLIC KEY ----"):
            return _load_rfc4716(text)
        if text.startswith(b"-----BEGIN"):
            return serialization.load_pem_public_key(text)
        return serialization.load_der_public_key(base64.b64decode(b"".join(text.split()), validate=True))
    except (ValueError, UnsupportedAlgorithm, binascii.Error, IndexError, struct.error):
        raise bad from None


def _load_rfc4716(text: bytes) -> object:
    lines = [ln.strip() for ln in text.splitlines()[1:]]
    body: list[bytes] = []
    continued = False
    for ln in lines:
        if ln.startswith(b"---- END"):
            break
        if continued or b":" in ln:  # a header (possibly continued with a trailing backslash)
            continued = ln.endswith(b"\\")
            continue
        body.append(ln)
    blob = base64.b64decode(b"".join(body), validate=True)
    (name_len,) = struct.unpack(">I", blob[:4])
    key_type = blob[4 : 4 + name_len]
    return serialization.load_ssh_public_key(key_type + b" " + base64.b64encode(blob))


def check_key_name(name: str) -> None:
    if not name or len(name) > MAX_NAME_LENGTH or not name.isascii() or not name.isprintable():
        raise Ec2Error("InvalidParameterValue", f"Value ({name}) for parameter keyName is invalid.")


# -- the table -------------------------------------------------------------------------------------------


def name_taken(tx: Tx, account_id: str, name: str) -> bool:
    return bool(tx.one("SELECT 1 FROM clc_keypairs WHERE account_id=? AND name=?", (account_id, name)))


def insert_key_pair(
    tx: Tx,
    account_id: str,
    name: str,
    key_type: str,
    public_key: str,
    fingerprint: str,
    tag_pairs: list[tuple[str, str]],
) -> str:
    """A new key pair of the account (its name must be free there) with its tags; its id."""
    if name_taken(tx, account_id, name):
        raise Ec2Error("InvalidKeyPair.Duplicate", f"The keypair '{name}' already exists.")
    key_pair_id = new_key_pair_id()
    tx.execute(
        "INSERT INTO clc_keypairs(key_pair_id, account_id, name, fingerprint, key_type, public_key, created) "
        "VALUES(?,?,?,?,?,?,?)",
        (key_pair_id, account_id, name, fingerprint, key_type, public_key, time.time()),
    )
    tags.write_tags(tx, account_id, key_pair_id, "key-pair", tag_pairs)
    return key_pair_id


def load_key_pairs(tx: Tx, account_id: str) -> list[KeyPairRecord]:
    """The account's key pairs by name, with its tags on them."""
    rows = tx.all(
        "SELECT key_pair_id, name, fingerprint, key_type, public_key, created FROM clc_keypairs "
        "WHERE account_id=? ORDER BY name",
        (account_id,),
    )
    tagged = tags.tags_of(tx, account_id, (r["key_pair_id"] for r in rows))
    return [
        KeyPairRecord(
            key_pair_id=r["key_pair_id"],
            name=r["name"],
            fingerprint=r["fingerprint"],
            key_type=r["key_type"],
            public_key=r["public_key"],
            created=r["created"],
            tags=tagged.get(r["key_pair_id"], {}),
        )
        for r in rows
    ]


def public_key_of(tx: Tx, account_id: str, name: str) -> str:
    """The OpenSSH public key of the account's key pair `name` (what RunInstances hands the instance)."""
    row = tx.one("SELECT public_key FROM clc_keypairs WHERE account_id=? AND name=?", (account_id, name))
    if row is None:
        raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{name}' does not exist")
    return str(row["public_key"])


def key_pair_visible(tx: Tx, key_pair_id: str, account_id: str) -> bool:
    return bool(
        tx.one("SELECT 1 FROM clc_keypairs WHERE key_pair_id=? AND account_id=?", (key_pair_id, account_id))
    )


TAG_KIND = tags.ResourceKind(("key",), "key-pair", "InvalidKeyPair.NotFound", key_pair_visible)


def delete_key_pair(tx: Tx, account_id: str, *, key_pair_id: str | None, name: str | None) -> str | None:
    """Delete the account's key pair named by id (unknown: NotFound) or by name (unknown: nothing, as EC2),
    with its tags. The id deleted, if any."""
    if key_pair_id:
        row = tx.one(
            "SELECT key_pair_id FROM clc_keypairs WHERE account_id=? AND key_pair_id=?",
            (account_id, key_pair_id),
        )
        if row is None:
            raise Ec2Error("InvalidKeyPair.NotFound", f"The key pair '{key_pair_id}' does not exist")
    else:
        row = tx.one("SELECT key_pair_id FROM clc_keypairs WHERE account_id=? AND name=?", (account_id, name))
        if row is None:  # EC2 answers success for a name that is not there
            return None
    deleted: str = row["key_pair_id"]
    tx.execute("DELETE FROM clc_keypairs WHERE key_pair_id=?", (deleted,))
    tags.forget_resource(tx, deleted)
    return deleted
