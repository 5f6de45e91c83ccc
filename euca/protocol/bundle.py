"""Bundled images: the euca2ools / EC2 AMI-tools manifest, and the node's download manifest.

Sans-I/O: bytes in, typed values out (and back). No files, no sockets.

One module on purpose (~780 lines): the bundle manifest and the download manifest are two views of one
format (the download manifest re-wraps the bundle's key for a node and lists its parts as URLs); they share
the XML reader, the RSA key wrapping and signing, and the error types, and each is read by both the CLC and
the image tools.

The bundle manifest (`<prefix>.manifest.xml`, version 2007-10-10) is written in the element order
euca2ools 1.x and Amazon's AMI tools used (euca2ools 3 moved `type` after `bundled_size`; readers
look elements up by name, so both parse):

    manifest
      version  bundler(name, version, release)
      machine_configuration  architecture, [block_device_mapping/mapping(virtual, device)],
                             [product_codes/product_code], [kernel_id], [ramdisk_id]
      image  name, user, type, digest[algorithm=SHA1], size, bundled_size,
             ec2_encrypted_key[algorithm=AES-128-CBC], user_encrypted_key[algorithm=AES-128-CBC],
             ec2_encrypted_iv, user_encrypted_iv, parts[count]/part[index](filename, digest[algorithm=SHA1])
      signature

The signature is hex RSA PKCS#1 v1.5 with SHA1, by the user's key, over the exact bytes of
`<machine_configuration>...</machine_configuration>` followed by `<image>...</image>` as they stand in the
file: the parser keeps those raw byte ranges and the verifier checks them, never a re-serialisation.

The AES key and IV are 16 random bytes each, written as 32-character lowercase hex; that ASCII string is
RSA-encrypted (PKCS#1 v1.5) and hex-encoded, once for the cloud certificate (`ec2_*`) and once for the
user's (`user_*`).

Download manifest (euca's format for what Eucalyptus 4 called the download manifest): the CLC unwraps the
key and IV with the cloud key, re-wraps them for one node's certificate, lists presigned part URLs and signs
the lot with the cloud key. Layout:

    <?xml version="1.0" encoding="UTF-8"?>
    <download_manifest version="1">
      <signed>
        <image_id>emi-0123abcd</image_id>
        <expires>2030-01-01T00:00:00Z</expires>              (ISO 8601 UTC; the URLs expire too)
        <recipient>SHA-256 hex of the node certificate (DER)</recipient>
        <image>
          <type>machine</type>
          <digest algorithm="SHA1">hex SHA1 of the tar stream</digest>
          <size>raw image bytes</size>
          <bundled_size>sum of the parts</bundled_size>
          <encrypted_key algorithm="AES-128-CBC">hex RSA PKCS#1 v1.5 for the node</encrypted_key>
          <encrypted_iv>hex RSA PKCS#1 v1.5 for the node</encrypted_iv>
          <parts count="N">
            <part index="0"><digest algorithm="SHA1">hex</digest><url>presigned GET URL</url></part>
          </parts>
        </image>
      </signed>
      <signature algorithm="RSA-SHA256">hex RSA PKCS#1 v1.5 SHA-256 over the raw bytes of <signed>..</signed></signature>
    </download_manifest>
"""

from __future__ import annotations

import binascii
import datetime as dt
import hashlib
import os
import re
import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape as _xml_escape

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

MANIFEST_VERSION = "2007-10-10"
DOWNLOAD_MANIFEST_VERSION = "1"
PART_SIZE = 10485760
ENCRYPTION_ALGORITHM = "AES-128-CBC"
DIGEST_ALGORITHM = "SHA1"
DOWNLOAD_SIGNATURE_ALGORITHM = "RSA-SHA256"
IMAGE_TYPES = ("machine", "kernel", "ramdisk")
UNSIGNED = "UNSIGNED"
# A manifest for a 1 TiB image has ~100k parts (~12 MB of XML); refuse anything past that.
MAX_MANIFEST_BYTES = 32 * 1024 * 1024
MAX_MANIFEST_DEPTH = 32  # a manifest nests five deep (manifest/image/parts/part/filename)

_HEX40 = re.compile(r"[0-9a-f]{40}")
_HEX = re.compile(r"(?:[0-9a-f]{2})+")
_ARCH = re.compile(r"[A-Za-z0-9_.-]{1,32}")


class BundleError(Exception):
    """Base of everything this module refuses."""


class ManifestError(BundleError):
    """The manifest is not well-formed XML or lacks / misstates a required field."""


class ManifestSignatureError(BundleError):
    """The signature is missing (UNSIGNED), malformed, or does not match the signed bytes."""


class KeyUnwrapError(BundleError):
    """The wrapped key or IV cannot be decrypted with the private key given (wrong key, or corrupt)."""


class ManifestExpired(BundleError):
    """A download manifest past its expiry time."""


# ---------------------------------------------------------------------------------------------------------
# Typed values


class BlockDeviceMapping(msgspec.Struct, frozen=True):
    virtual: str  # "ami", "root", "ephemeral0", "swap"
    device: str  # "sda1", "/dev/sda2"


class BundlerInfo(msgspec.Struct, frozen=True):
    name: str = "euca"
    version: str = "0.1.0"
    release: str = "0"


class BundlePart(msgspec.Struct, frozen=True):
    index: int
    filename: str
    digest: str  # lowercase hex SHA1 of the part's (encrypted) bytes


class BundleContents(msgspec.Struct, frozen=True):
    """What a bundler knows about a bundle before keys are wrapped and the manifest signed."""

    name: str
    user: str  # account id
    image_type: str
    architecture: str
    digest: str  # hex SHA1 of the uncompressed tar stream
    size: int  # raw image bytes
    bundled_size: int  # sum of the part sizes
    parts: tuple[BundlePart, ...]
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    block_device_mappings: tuple[BlockDeviceMapping, ...] = ()
    product_codes: tuple[str, ...] = ()
    bundler: BundlerInfo = BundlerInfo()


class BundleManifest(msgspec.Struct, frozen=True):
    """A parsed bundle manifest. `signed_bytes` is what the signature covers, taken from the file as written."""

    version: str
    bundler: BundlerInfo
    architecture: str
    name: str
    user: str
    image_type: str
    digest: str
    digest_algorithm: str
    size: int
    bundled_size: int
    ec2_encrypted_key: str
    user_encrypted_key: str
    ec2_encrypted_iv: str
    user_encrypted_iv: str
    encryption_algorithm: str
    parts: tuple[BundlePart, ...]
    signature: str  # hex, or "UNSIGNED"
    signed_bytes: bytes
    kernel_id: str | None = None
    ramdisk_id: str | None = None
    block_device_mappings: tuple[BlockDeviceMapping, ...] = ()
    product_codes: tuple[str, ...] = ()

    @property
    def signed(self) -> bool:
        return self.signature != UNSIGNED


class DownloadPart(msgspec.Struct, frozen=True):
    index: int
    digest: str
    url: str


class DownloadManifest(msgspec.Struct, frozen=True):
    image_id: str
    expires: dt.datetime
    recipient: str  # SHA-256 hex fingerprint of the node certificate the key is wrapped for
    image_type: str
    digest: str
    size: int
    bundled_size: int
    encrypted_key: str
    encrypted_iv: str
    parts: tuple[DownloadPart, ...]
    signature: str
    signed_bytes: bytes


# ---------------------------------------------------------------------------------------------------------
# Keys: loading, wrapping, signing


def load_certificate(pem_or_der: bytes) -> x509.Certificate:
    try:
        if b"-----BEGIN" in pem_or_der:
            return x509.load_pem_x509_certificate(pem_or_der)
        return x509.load_der_x509_certificate(pem_or_der)
    except ValueError as e:
        raise BundleError(f"not an X.509 certificate: {e}") from e


def load_private_key(pem: bytes) -> rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as e:
        raise BundleError(f"not an unencrypted PEM private key: {e}") from e
    if not isinstance(key, rsa.RSAPrivateKey):
        raise BundleError("bundling needs an RSA private key")
    return key


def certificate_fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _rsa_public(cert: x509.Certificate) -> rsa.RSAPublicKey:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise BundleError("bundling needs a certificate with an RSA public key")
    return key


def new_key_and_iv() -> tuple[bytes, bytes]:
    """A fresh random AES-128 key and CBC IV (16 bytes each)."""
    return os.urandom(16), os.urandom(16)


def wrap_secret(secret: bytes, cert: x509.Certificate) -> str:
    """16 raw bytes -> hex of RSA PKCS#1 v1.5 over their 32-character lowercase hex ASCII form."""
    if len(secret) != 16:
        raise ValueError("AES-128 keys and IVs are 16 bytes")
    ascii_hex = secret.hex().encode("ascii")
    return _rsa_public(cert).encrypt(ascii_hex, padding.PKCS1v15()).hex()


def unwrap_secret(wrapped_hex: str, private_key: rsa.RSAPrivateKey) -> bytes:
    """The inverse of wrap_secret: 16 raw bytes, or KeyUnwrapError."""
    try:
        ciphertext = binascii.unhexlify(wrapped_hex.strip())
    except (binascii.Error, ValueError) as e:
        raise KeyUnwrapError("wrapped key is not hex") from e
    if len(ciphertext) != private_key.key_size // 8:
        raise KeyUnwrapError("wrapped key was not encrypted for this private key (length differs)")
    try:
        plain = private_key.decrypt(ciphertext, padding.PKCS1v15())
    except ValueError as e:
        raise KeyUnwrapError("cannot decrypt the wrapped key with this private key") from e
    # Some bundlers (openssl rsautl fed from `echo`) leave a newline after the hex.
    text = plain.strip()
    if len(text) != 32:
        raise KeyUnwrapError("decrypted key is not 32 hex characters: wrong private key?")
    try:
        return bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as e:
        raise KeyUnwrapError("decrypted key is not hex: wrong private key?") from e


def sign_sha1(data: bytes, private_key: rsa.RSAPrivateKey) -> str:
    return private_key.sign(data, padding.PKCS1v15(), hashes.SHA1()).hex()


def _verify(signature_hex: str, data: bytes, cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> None:
    if signature_hex == UNSIGNED:
        raise ManifestSignatureError("the manifest is unsigned")
    if not _HEX.fullmatch(signature_hex):
        raise ManifestSignatureError("the signature is not hex")
    try:
        _rsa_public(cert).verify(bytes.fromhex(signature_hex), data, padding.PKCS1v15(), algorithm)
    except InvalidSignature as e:
        raise ManifestSignatureError(
            "the manifest signature does not match its contents and certificate"
        ) from e


# ---------------------------------------------------------------------------------------------------------
# A minimal XML tree that remembers where each element starts and ends in the input bytes


@dataclass
class _Element:
    tag: str
    attrs: dict[str, str]
    start: int
    end: int = -1
    children: list[_Element] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.text_parts).strip()

    def all(self, tag: str) -> list[_Element]:
        return [c for c in self.children if c.tag == tag]

    def one(self, tag: str) -> _Element:
        found = self.all(tag)
        if len(found) != 1:
            what = "missing" if not found else f"repeated {len(found)} times"
            raise ManifestError(f"<{self.tag}>: <{tag}> is {what}")
        return found[0]

    def optional(self, tag: str) -> _Element | None:
        found = self.all(tag)
        if len(found) > 1:
            raise ManifestError(f"<{self.tag}>: <{tag}> is repeated {len(found)} times")
        return found[0] if found else None

    def text_of(self, tag: str) -> str:
        return self.one(tag).text

    def raw(self, data: bytes) -> bytes:
        return data[self.start : self.end]


def _parse_tree(data: bytes, limit: int = MAX_MANIFEST_BYTES) -> _Element:
    if len(data) > limit:
        raise ManifestError(f"manifest larger than {limit} bytes")
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Element] = []
    root: list[_Element] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        if len(stack) >= MAX_MANIFEST_DEPTH:
            raise ManifestError(f"manifest nested deeper than {MAX_MANIFEST_DEPTH} elements")
        el = _Element(tag, attrs, parser.CurrentByteIndex)
        if stack:
            stack[-1].children.append(el)
        else:
            root.append(el)
        stack.append(el)

    def end(tag: str) -> None:
        el = stack.pop()
        pos = parser.CurrentByteIndex
        if data[pos : pos + 2] == b"</":
            el.end = data.index(b">", pos) + 1
        else:
            el.end = -1  # self-closing: no raw range (never needed for such elements)

    def chars(text: str) -> None:
        if stack:
            stack[-1].text_parts.append(text)

    def refuse(*_: object) -> None:
        raise ManifestError("DOCTYPE and entity declarations are not allowed in a manifest")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    try:
        parser.Parse(data, True)
    except xml.parsers.expat.ExpatError as e:
        raise ManifestError(f"manifest is not well-formed XML: {e}") from e
    if not root:
        raise ManifestError("manifest is empty")
    return root[0]


def _int(el: _Element, tag: str) -> int:
    text = el.text_of(tag)
    if not text.isdigit():
        raise ManifestError(f"<{tag}> is not a non-negative integer: {text[:40]!r}")
    return int(text)


def _sha1_hex(el: _Element, what: str) -> str:
    alg = el.attrs.get("algorithm", DIGEST_ALGORITHM)
    if alg.upper() != DIGEST_ALGORITHM:
        raise ManifestError(f"{what}: unsupported digest algorithm {alg!r}")
    value = el.text.lower()
    if not _HEX40.fullmatch(value):
        raise ManifestError(f"{what}: not a hex SHA1 digest")
    return value


def _hex_field(el: _Element, tag: str) -> str:
    value = el.text_of(tag).lower()
    if not _HEX.fullmatch(value):
        raise ManifestError(f"<{tag}> is not hex")
    return value


def _part_filename(name: str) -> str:
    # Filenames are joined to a directory or a bucket prefix: never let one climb out of it.
    if not name or "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        raise ManifestError(f"bad part filename {name[:80]!r}")
    return name


# ---------------------------------------------------------------------------------------------------------
# The bundle manifest


def _e(text: str) -> str:
    return _xml_escape(text)


def render_machine_configuration(contents: BundleContents) -> bytes:
    out = [f"<machine_configuration><architecture>{_e(contents.architecture)}</architecture>"]
    if contents.block_device_mappings:
        out.append("<block_device_mapping>")
        for m in contents.block_device_mappings:
            out.append(
                f"<mapping><virtual>{_e(m.virtual)}</virtual><device>{_e(m.device)}</device></mapping>"
            )
        out.append("</block_device_mapping>")
    if contents.product_codes:
        out.append("<product_codes>")
        out.extend(f"<product_code>{_e(code)}</product_code>" for code in contents.product_codes)
        out.append("</product_codes>")
    if contents.kernel_id:
        out.append(f"<kernel_id>{_e(contents.kernel_id)}</kernel_id>")
    if contents.ramdisk_id:
        out.append(f"<ramdisk_id>{_e(contents.ramdisk_id)}</ramdisk_id>")
    out.append("</machine_configuration>")
    return "".join(out).encode("utf-8")


def render_image(
    contents: BundleContents,
    *,
    ec2_encrypted_key: str,
    user_encrypted_key: str,
    ec2_encrypted_iv: str,
    user_encrypted_iv: str,
) -> bytes:
    alg = ENCRYPTION_ALGORITHM
    out = [
        "<image>",
        f"<name>{_e(contents.name)}</name>",
        f"<user>{_e(contents.user)}</user>",
        f"<type>{_e(contents.image_type)}</type>",
        f'<digest algorithm="{DIGEST_ALGORITHM}">{contents.digest}</digest>',
        f"<size>{contents.size}</size>",
        f"<bundled_size>{contents.bundled_size}</bundled_size>",
        f'<ec2_encrypted_key algorithm="{alg}">{ec2_encrypted_key}</ec2_encrypted_key>',
        f'<user_encrypted_key algorithm="{alg}">{user_encrypted_key}</user_encrypted_key>',
        f"<ec2_encrypted_iv>{ec2_encrypted_iv}</ec2_encrypted_iv>",
        f"<user_encrypted_iv>{user_encrypted_iv}</user_encrypted_iv>",
        f'<parts count="{len(contents.parts)}">',
    ]
    for part in contents.parts:
        out.append(
            f'<part index="{part.index}"><filename>{_e(part.filename)}</filename>'
            f'<digest algorithm="{DIGEST_ALGORITHM}">{part.digest}</digest></part>'
        )
    out.append("</parts></image>")
    return "".join(out).encode("utf-8")


def build_manifest(
    contents: BundleContents,
    *,
    key: bytes,
    iv: bytes,
    cloud_cert: x509.Certificate,
    user_cert: x509.Certificate,
    user_key: rsa.RSAPrivateKey | None,
) -> bytes:
    """The manifest file's bytes. `user_key=None` writes an UNSIGNED manifest (which registration refuses)."""
    _check_contents(contents)
    mc = render_machine_configuration(contents)
    image = render_image(
        contents,
        ec2_encrypted_key=wrap_secret(key, cloud_cert),
        user_encrypted_key=wrap_secret(key, user_cert),
        ec2_encrypted_iv=wrap_secret(iv, cloud_cert),
        user_encrypted_iv=wrap_secret(iv, user_cert),
    )
    signature = sign_sha1(mc + image, user_key) if user_key is not None else UNSIGNED
    b = contents.bundler
    head = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<manifest><version>{MANIFEST_VERSION}</version>'
        f"<bundler><name>{_e(b.name)}</name><version>{_e(b.version)}</version>"
        f"<release>{_e(b.release)}</release></bundler>"
    ).encode()
    return head + mc + image + f"<signature>{signature}</signature></manifest>\n".encode("ascii")


def _check_contents(c: BundleContents) -> None:
    if c.image_type not in IMAGE_TYPES:
        raise ValueError(f"image type must be one of {IMAGE_TYPES}, not {c.image_type!r}")
    if not _ARCH.fullmatch(c.architecture):
        raise ValueError(f"bad architecture {c.architecture!r}")
    if not _HEX40.fullmatch(c.digest):
        raise ValueError("digest must be 40 lowercase hex characters")
    for i, part in enumerate(c.parts):
        if part.index != i:
            raise ValueError("parts must be listed in index order from 0")
        try:
            _part_filename(part.filename)
        except ManifestError as e:
            raise ValueError(str(e)) from e
        if not _HEX40.fullmatch(part.digest):
            raise ValueError(f"part {i}: digest must be 40 lowercase hex characters")


def parse_manifest(data: bytes) -> BundleManifest:
    """Parse (and structurally validate) a bundle manifest. Does not check the signature: see verify_manifest."""
    root = _parse_tree(data)
    if root.tag != "manifest":
        raise ManifestError(f"root element is <{root.tag}>, not <manifest>")
    version = root.text_of("version")
    bundler_el = root.optional("bundler")
    bundler = BundlerInfo()
    if bundler_el is not None:
        bundler = BundlerInfo(
            name=_text_or(bundler_el, "name", ""),
            version=_text_or(bundler_el, "version", ""),
            release=_text_or(bundler_el, "release", ""),
        )
    mc = root.one("machine_configuration")
    image = root.one("image")
    if mc.end < 0 or image.end < 0:
        raise ManifestError("<machine_configuration> and <image> must not be empty elements")
    signed_bytes = mc.raw(data) + image.raw(data)

    architecture = mc.text_of("architecture")
    if not _ARCH.fullmatch(architecture):
        raise ManifestError(f"bad architecture {architecture[:40]!r}")
    kernel_id = _opt_text(mc, "kernel_id")
    ramdisk_id = _opt_text(mc, "ramdisk_id")
    mappings: list[BlockDeviceMapping] = []
    # euca2ools 3 reads <block_device_mappings>/<block_device_mapping>; everyone writes the singular form.
    bdm = mc.optional("block_device_mapping")
    if bdm is not None:
        for m in bdm.all("mapping"):
            mappings.append(BlockDeviceMapping(virtual=m.text_of("virtual"), device=m.text_of("device")))
    codes: list[str] = []
    pc = mc.optional("product_codes")
    if pc is not None:
        codes = [c.text for c in pc.all("product_code")]

    type_el = image.optional("type")
    if type_el is not None:
        image_type = type_el.text
    elif kernel_id == "true":  # Eucalyptus' old way of marking a kernel or ramdisk bundle
        image_type = "kernel"
    elif ramdisk_id == "true":
        image_type = "ramdisk"
    else:
        image_type = "machine"
    if image_type not in IMAGE_TYPES:
        raise ManifestError(f"image type {image_type[:40]!r} is not one of {', '.join(IMAGE_TYPES)}")

    digest_el = image.one("digest")
    digest = _sha1_hex(digest_el, "image digest")
    key_el = image.one("ec2_encrypted_key")
    algorithm = key_el.attrs.get("algorithm", ENCRYPTION_ALGORITHM)
    if algorithm.upper() != ENCRYPTION_ALGORITHM:
        raise ManifestError(f"unsupported encryption algorithm {algorithm[:40]!r}")
    parts = _parse_parts(image.one("parts"))
    return BundleManifest(
        version=version,
        bundler=bundler,
        architecture=architecture,
        name=image.text_of("name"),
        user=image.text_of("user"),
        image_type=image_type,
        digest=digest,
        digest_algorithm=DIGEST_ALGORITHM,
        size=_int(image, "size"),
        bundled_size=_int(image, "bundled_size"),
        ec2_encrypted_key=_hex_field(image, "ec2_encrypted_key"),
        user_encrypted_key=_hex_field(image, "user_encrypted_key"),
        ec2_encrypted_iv=_hex_field(image, "ec2_encrypted_iv"),
        user_encrypted_iv=_hex_field(image, "user_encrypted_iv"),
        encryption_algorithm=ENCRYPTION_ALGORITHM,
        parts=parts,
        signature=_signature_text(root),
        signed_bytes=signed_bytes,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        block_device_mappings=tuple(mappings),
        product_codes=tuple(codes),
    )


def _text_or(el: _Element, tag: str, default: str) -> str:
    child = el.optional(tag)
    return child.text if child is not None else default


def _opt_text(el: _Element, tag: str) -> str | None:
    child = el.optional(tag)
    return child.text or None if child is not None else None


def _signature_text(root: _Element) -> str:
    sig = root.optional("signature")
    if sig is None or not sig.text:
        return UNSIGNED
    text = sig.text
    return text if text == UNSIGNED else text.lower()


def _parse_parts(parts_el: _Element) -> tuple[BundlePart, ...]:
    count_text = parts_el.attrs.get("count", "")
    if not count_text.isdigit():
        raise ManifestError("<parts> needs a numeric count attribute")
    count = int(count_text)
    part_els = parts_el.all("part")
    if len(part_els) != count:
        raise ManifestError(f"<parts count={count}> lists {len(part_els)} parts")
    by_index: dict[int, BundlePart] = {}
    for el in part_els:
        index_text = el.attrs.get("index", "")
        if not index_text.isdigit() or int(index_text) >= count:
            raise ManifestError(f"part index {index_text[:20]!r} is not in 0..{count - 1}")
        index = int(index_text)
        if index in by_index:
            raise ManifestError(f"part index {index} appears twice")
        by_index[index] = BundlePart(
            index=index,
            filename=_part_filename(el.text_of("filename")),
            digest=_sha1_hex(el.one("digest"), f"part {index} digest"),
        )
    return tuple(by_index[i] for i in range(count))


def verify_manifest(manifest: BundleManifest, cert: x509.Certificate) -> None:
    """ManifestSignatureError unless the manifest is signed by the key of `cert` over its raw signed bytes."""
    _verify(manifest.signature, manifest.signed_bytes, cert, hashes.SHA1())


def manifest_key_iv(
    manifest: BundleManifest, private_key: rsa.RSAPrivateKey, *, holder: str = "ec2"
) -> tuple[bytes, bytes]:
    """The AES key and IV, unwrapped with the cloud's key (holder="ec2") or the user's (holder="user")."""
    if holder == "ec2":
        return (
            unwrap_secret(manifest.ec2_encrypted_key, private_key),
            unwrap_secret(manifest.ec2_encrypted_iv, private_key),
        )
    if holder == "user":
        return (
            unwrap_secret(manifest.user_encrypted_key, private_key),
            unwrap_secret(manifest.user_encrypted_iv, private_key),
        )
    raise ValueError("holder is 'ec2' or 'user'")


def part_sizes(bundled_size: int, count: int, part_size: int = PART_SIZE) -> list[int]:
    """The size each part has when a bundler cut `bundled_size` bytes into `part_size` pieces."""
    sizes = [part_size] * count
    if count:
        sizes[-1] = bundled_size - part_size * (count - 1)
    return sizes


# ---------------------------------------------------------------------------------------------------------
# The download manifest (CLC -> NC)


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_download_manifest(
    manifest: BundleManifest,
    *,
    image_id: str,
    part_urls: Sequence[str],
    cloud_key: rsa.RSAPrivateKey,
    node_cert: x509.Certificate,
    expires: dt.datetime,
) -> bytes:
    """Re-wrap a (verified) bundle's key and IV for one node and sign the list of presigned part URLs.

    The key and IV are unwrapped from the manifest's ec2_* fields with the cloud key and only ever leave
    this function wrapped for `node_cert`.
    """
    if len(part_urls) != len(manifest.parts):
        raise ValueError(f"{len(part_urls)} URLs for {len(manifest.parts)} parts")
    if expires.tzinfo is None:
        raise ValueError("expires must be timezone-aware")
    key, iv = manifest_key_iv(manifest, cloud_key, holder="ec2")
    parts = "".join(
        f'<part index="{p.index}"><digest algorithm="{DIGEST_ALGORITHM}">{p.digest}</digest>'
        f"<url>{_e(url)}</url></part>"
        for p, url in zip(manifest.parts, part_urls, strict=True)
    )
    signed = (
        f"<signed><image_id>{_e(image_id)}</image_id><expires>{_iso(expires)}</expires>"
        f"<recipient>{certificate_fingerprint(node_cert)}</recipient>"
        f"<image><type>{manifest.image_type}</type>"
        f'<digest algorithm="{DIGEST_ALGORITHM}">{manifest.digest}</digest>'
        f"<size>{manifest.size}</size><bundled_size>{manifest.bundled_size}</bundled_size>"
        f'<encrypted_key algorithm="{ENCRYPTION_ALGORITHM}">{wrap_secret(key, node_cert)}</encrypted_key>'
        f"<encrypted_iv>{wrap_secret(iv, node_cert)}</encrypted_iv>"
        f'<parts count="{len(manifest.parts)}">{parts}</parts></image></signed>'
    ).encode()
    signature = cloud_key.sign(signed, padding.PKCS1v15(), hashes.SHA256()).hex()
    return (
        (
            f'<?xml version="1.0" encoding="UTF-8"?>\n<download_manifest version="{DOWNLOAD_MANIFEST_VERSION}">'
        ).encode()
        + signed
        + (
            f'<signature algorithm="{DOWNLOAD_SIGNATURE_ALGORITHM}">{signature}</signature></download_manifest>\n'
        ).encode()
    )


def parse_download_manifest(data: bytes) -> DownloadManifest:
    root = _parse_tree(data)
    if root.tag != "download_manifest":
        raise ManifestError(f"root element is <{root.tag}>, not <download_manifest>")
    if root.attrs.get("version") != DOWNLOAD_MANIFEST_VERSION:
        raise ManifestError(f"unsupported download manifest version {root.attrs.get('version')!r}")
    signed = root.one("signed")
    if signed.end < 0:
        raise ManifestError("<signed> is empty")
    sig_el = root.one("signature")
    if sig_el.attrs.get("algorithm") != DOWNLOAD_SIGNATURE_ALGORITHM:
        raise ManifestError("unsupported download manifest signature algorithm")
    image = signed.one("image")
    image_type = image.text_of("type")
    if image_type not in IMAGE_TYPES:
        raise ManifestError(f"image type {image_type[:40]!r} is not one of {', '.join(IMAGE_TYPES)}")
    try:
        expires = dt.datetime.strptime(signed.text_of("expires"), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError as e:
        raise ManifestError("<expires> is not an ISO 8601 UTC time") from e
    parts_el = image.one("parts")
    count_text = parts_el.attrs.get("count", "")
    part_els = parts_el.all("part")
    if not count_text.isdigit() or int(count_text) != len(part_els):
        raise ManifestError("<parts> count does not match the parts listed")
    parts = []
    for i, el in enumerate(part_els):
        if el.attrs.get("index") != str(i):
            raise ManifestError("download manifest parts must be listed in index order")
        url = el.text_of("url")
        if not url:
            raise ManifestError(f"part {i} has no URL")
        parts.append(DownloadPart(index=i, digest=_sha1_hex(el.one("digest"), f"part {i} digest"), url=url))
    return DownloadManifest(
        image_id=signed.text_of("image_id"),
        expires=expires,
        recipient=signed.text_of("recipient").lower(),
        image_type=image_type,
        digest=_sha1_hex(image.one("digest"), "image digest"),
        size=_int(image, "size"),
        bundled_size=_int(image, "bundled_size"),
        encrypted_key=_hex_field(image, "encrypted_key"),
        encrypted_iv=_hex_field(image, "encrypted_iv"),
        parts=tuple(parts),
        signature=sig_el.text.lower(),
        signed_bytes=signed.raw(data),
    )


def verify_download_manifest(
    manifest: DownloadManifest,
    cloud_cert: x509.Certificate,
    *,
    node_cert: x509.Certificate | None = None,
    now: dt.datetime | None = None,
) -> None:
    """ManifestSignatureError unless signed by the cloud; also refuses one meant for another node, or expired."""
    _verify(manifest.signature, manifest.signed_bytes, cloud_cert, hashes.SHA256())
    if node_cert is not None and certificate_fingerprint(node_cert) != manifest.recipient:
        raise ManifestSignatureError("the download manifest was made for another node")
    if now is not None and now >= manifest.expires:
        raise ManifestExpired(f"the download manifest expired at {_iso(manifest.expires)}")


def download_key_iv(manifest: DownloadManifest, node_key: rsa.RSAPrivateKey) -> tuple[bytes, bytes]:
    return unwrap_secret(manifest.encrypted_key, node_key), unwrap_secret(manifest.encrypted_iv, node_key)
