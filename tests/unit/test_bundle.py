"""euca.protocol.bundle: the bundle manifest and the download manifest, without sockets or files."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from xml.etree import ElementTree

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from euca.protocol import bundle as b
from helpers.bundle_keys import BundleKeys

KEY = bytes(range(16))
IV = bytes(range(16, 32))


def contents(**changes: object) -> b.BundleContents:
    fields: dict[str, object] = dict(
        name="disk & <1>.img",
        user="000000000042",
        image_type="machine",
        architecture="x86_64",
        digest="0123456789abcdef0123456789abcdef01234567",
        size=21000000,
        bundled_size=12345678,
        parts=(
            b.BundlePart(index=0, filename="disk.img.part.00", digest="a" * 40),
            b.BundlePart(index=1, filename="disk.img.part.01", digest="b" * 40),
        ),
        kernel_id="eki-11111111",
        ramdisk_id="eri-22222222",
        block_device_mappings=(
            b.BlockDeviceMapping("ami", "sda1"),
            b.BlockDeviceMapping("root", "/dev/sda1"),
        ),
        product_codes=("pc1",),
    )
    fields.update(changes)
    return b.BundleContents(**fields)  # type: ignore[arg-type]


def build(keys: BundleKeys, c: b.BundleContents | None = None, signed: bool = True) -> bytes:
    return b.build_manifest(
        c or contents(),
        key=KEY,
        iv=IV,
        cloud_cert=keys.cloud_cert,
        user_cert=keys.user_cert,
        user_key=keys.user_key if signed else None,
    )


def test_round_trip_and_signature(keys: BundleKeys) -> None:
    data = build(keys)
    m = b.parse_manifest(data)
    b.verify_manifest(m, keys.user_cert)
    assert m.version == "2007-10-10"
    assert m.name == "disk & <1>.img" and m.user == "000000000042" and m.image_type == "machine"
    assert m.architecture == "x86_64" and m.kernel_id == "eki-11111111" and m.ramdisk_id == "eri-22222222"
    assert m.block_device_mappings == (
        b.BlockDeviceMapping("ami", "sda1"),
        b.BlockDeviceMapping("root", "/dev/sda1"),
    )
    assert m.product_codes == ("pc1",)
    assert (m.size, m.bundled_size) == (21000000, 12345678)
    assert [p.filename for p in m.parts] == ["disk.img.part.00", "disk.img.part.01"]
    assert m.signed_bytes.startswith(b"<machine_configuration>") and m.signed_bytes.endswith(b"</image>")
    assert b.manifest_key_iv(m, keys.cloud_key, holder="ec2") == (KEY, IV)
    assert b.manifest_key_iv(m, keys.user_key, holder="user") == (KEY, IV)


def test_element_order_is_euca2ools(keys: BundleKeys) -> None:
    text = build(keys).decode()
    root = ElementTree.fromstring(text)
    assert [c.tag for c in root] == ["version", "bundler", "machine_configuration", "image", "signature"]
    assert [c.tag for c in root.find("bundler")] == ["name", "version", "release"]  # type: ignore[union-attr]
    mc = text[text.index("<machine_configuration>") : text.index("</machine_configuration>")]
    assert [
        t
        for t in re.findall(r"<([a-z_]+)[ >]", mc)
        if t in ("architecture", "block_device_mapping", "product_codes", "kernel_id", "ramdisk_id")
    ] == ["architecture", "block_device_mapping", "product_codes", "kernel_id", "ramdisk_id"]
    image = text[text.index("<image>") + 7 : text.index("<parts")]
    assert re.findall(r"<([a-z_0-9]+)[ >]", image) == [
        "name",
        "user",
        "type",
        "digest",
        "size",
        "bundled_size",
        "ec2_encrypted_key",
        "user_encrypted_key",
        "ec2_encrypted_iv",
        "user_encrypted_iv",
    ]
    assert '<ec2_encrypted_key algorithm="AES-128-CBC">' in text
    assert '<user_encrypted_key algorithm="AES-128-CBC">' in text
    assert '<digest algorithm="SHA1">' in text
    assert '<parts count="2"><part index="0"><filename>disk.img.part.00</filename>' in text


def test_wrapped_secret_is_hex_ascii_pkcs1(keys: BundleKeys) -> None:
    # The ASCII hex string, not the raw bytes, is what is RSA-encrypted (euca2ools / openssl rsautl).
    from cryptography.hazmat.primitives.asymmetric import padding

    wrapped = b.wrap_secret(KEY, keys.cloud_cert)
    assert keys.cloud_key.decrypt(bytes.fromhex(wrapped), padding.PKCS1v15()) == KEY.hex().encode()


def test_unsigned_manifest_is_refused(keys: BundleKeys) -> None:
    m = b.parse_manifest(build(keys, signed=False))
    assert m.signature == "UNSIGNED" and not m.signed
    with pytest.raises(b.ManifestSignatureError):
        b.verify_manifest(m, keys.user_cert)


def test_other_certificate_is_refused(keys: BundleKeys) -> None:
    m = b.parse_manifest(build(keys))
    with pytest.raises(b.ManifestSignatureError):
        b.verify_manifest(m, keys.node_cert)


def test_wrong_private_key_cannot_unwrap(keys: BundleKeys) -> None:
    m = b.parse_manifest(build(keys))
    with pytest.raises(b.KeyUnwrapError):
        b.manifest_key_iv(m, keys.node_key, holder="ec2")
    with pytest.raises(b.KeyUnwrapError):
        b.manifest_key_iv(m, keys.cloud_key, holder="user")


def _refused(data: bytes, cert: x509.Certificate) -> bool:
    try:
        b.verify_manifest(b.parse_manifest(data), cert)
    except b.BundleError:
        return True
    return False


def test_any_changed_byte_of_the_signed_ranges_is_refused(keys: BundleKeys) -> None:
    data = build(keys)
    start = data.index(b"<machine_configuration>")
    end = data.index(b"</image>") + len(b"</image>")
    for pos in range(start, end):
        original = data[pos]
        # A different printable character keeps most changes well-formed, so the signature is what refuses.
        replacement = ord("0") if original != ord("0") else ord("1")
        tampered = data[:pos] + bytes([replacement]) + data[pos + 1 :]
        assert _refused(tampered, keys.user_cert), (
            f"change at byte {pos} ({data[pos - 10 : pos + 10]!r}) accepted"
        )


@pytest.mark.parametrize(
    "old, new",
    [
        (b"<architecture>x86_64<", b"<architecture>i386<"),
        (b"<kernel_id>eki-11111111<", b"<kernel_id>eki-99999999<"),
        (b"<ramdisk_id>eri-22222222<", b"<ramdisk_id>eri-99999999<"),
        (b"<device>sda1<", b"<device>sdb1<"),
        (b"<name>disk", b"<name>evil"),
        (b"<user>000000000042<", b"<user>000000000043<"),
        (b"<type>machine<", b"<type>kernel<"),
        (b">0123456789abcdef0123456789abcdef01234567<", b">f123456789abcdef0123456789abcdef01234567<"),
        (b"<size>21000000<", b"<size>21000001<"),
        (b"<bundled_size>12345678<", b"<bundled_size>12345679<"),
        (b"<filename>disk.img.part.01<", b"<filename>other.part.01<"),
        (b">" + b"b" * 40 + b"<", b">" + b"c" * 40 + b"<"),
    ],
)
def test_tampered_field_is_refused(keys: BundleKeys, old: bytes, new: bytes) -> None:
    data = build(keys)
    assert data.count(old) == 1
    tampered = data.replace(old, new)
    parsed = b.parse_manifest(tampered)  # still well-formed: only the signature can tell
    with pytest.raises(b.ManifestSignatureError):
        b.verify_manifest(parsed, keys.user_cert)


@pytest.mark.parametrize(
    "field", ["ec2_encrypted_key", "user_encrypted_key", "ec2_encrypted_iv", "user_encrypted_iv"]
)
def test_tampered_wrapped_key_is_refused(keys: BundleKeys, field: str) -> None:
    data = build(keys)
    other = b.wrap_secret(bytes(16), keys.cloud_cert).encode()
    tampered = re.sub(rb"(<" + field.encode() + rb"[^>]*>)[0-9a-f]+<", rb"\g<1>" + other + b"<", data)
    assert tampered != data
    with pytest.raises(b.ManifestSignatureError):
        b.verify_manifest(b.parse_manifest(tampered), keys.user_cert)


def test_signature_is_over_raw_bytes_not_a_reserialisation(keys: BundleKeys) -> None:
    # euca2ools 3 writes <type> after <bundled_size>, no XML declaration; a pretty-printer adds whitespace.
    data = build(keys).decode()
    data = data.replace("<type>machine</type>", "").replace(
        "</bundled_size>", "</bundled_size><type>machine</type>"
    )
    data = data.replace('<?xml version="1.0" encoding="UTF-8"?>\n', "").replace(
        "<image>", "\n  <image>\n    "
    )
    mc = data[data.index("<machine_configuration>") : data.index("</machine_configuration>") + 24]
    image = data[data.index("<image>") : data.index("</image>") + 8]
    signature = b.sign_sha1((mc + image).encode(), keys.user_key)
    data = re.sub(r"<signature>[0-9a-f]+</signature>", f"<signature>{signature}</signature>", data)
    m = b.parse_manifest(data.encode())
    b.verify_manifest(m, keys.user_cert)
    assert m.image_type == "machine" and m.signed_bytes == (mc + image).encode()


def test_kernel_marked_the_old_eucalyptus_way(keys: BundleKeys) -> None:
    data = build(
        keys, contents(kernel_id="true", ramdisk_id=None, block_device_mappings=(), product_codes=())
    )
    data = data.replace(b"<type>machine</type>", b"")
    assert b.parse_manifest(data).image_type == "kernel"


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.replace(b"</image>", b"</image><image><name>x</name></image>"), "repeated"),
        (lambda d: b'<!DOCTYPE manifest [<!ENTITY x "y">]>' + d.split(b"\n", 1)[1], "DOCTYPE"),
        (lambda d: d.replace(b"disk.img.part.01", b"../etc.part.01"), "filename"),
        (lambda d: d.replace(b'count="2"', b'count="3"'), "lists 2 parts"),
        (lambda d: d.replace(b'index="1"', b'index="0"'), "twice"),
        (lambda d: d.replace(b"<size>21000000</size>", b"<size>-1</size>"), "integer"),
        (lambda d: d.replace(b"<type>machine</type>", b"<type>vm</type>"), "image type"),
        (lambda d: d.replace(b"</manifest>", b""), "well-formed"),
        (lambda d: d.replace(b"<user>000000000042</user>", b""), "<user> is missing"),
    ],
)
def test_malformed_manifest(keys: BundleKeys, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(b.ManifestError, match=message):
        b.parse_manifest(mutate(build(keys)))


def test_build_refuses_bad_contents(keys: BundleKeys) -> None:
    with pytest.raises(ValueError):
        build(keys, contents(image_type="vm"))
    with pytest.raises(ValueError):
        build(keys, contents(parts=(b.BundlePart(index=0, filename="a/b", digest="a" * 40),)))


def test_part_sizes() -> None:
    assert b.part_sizes(0, 0) == []
    assert b.part_sizes(b.PART_SIZE + 16, 2) == [b.PART_SIZE, 16]


# --- download manifest ------------------------------------------------------------------------------------

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
URLS = ["http://walrus:8773/bucket/disk.img.part.00?X-Amz-Signature=ab&a=1", "http://walrus/b/p1"]


def download(keys: BundleKeys) -> bytes:
    m = b.parse_manifest(build(keys))
    return b.build_download_manifest(
        m,
        image_id="emi-0123abcd",
        part_urls=URLS,
        cloud_key=keys.cloud_key,
        node_cert=keys.node_cert,
        expires=NOW + dt.timedelta(hours=1),
    )


def test_download_manifest_round_trip(keys: BundleKeys) -> None:
    data = download(keys)
    d = b.parse_download_manifest(data)
    b.verify_download_manifest(d, keys.cloud_cert, node_cert=keys.node_cert, now=NOW)
    assert d.image_id == "emi-0123abcd" and d.image_type == "machine"
    assert [p.url for p in d.parts] == URLS and [p.digest for p in d.parts] == ["a" * 40, "b" * 40]
    assert d.digest == "0123456789abcdef0123456789abcdef01234567" and d.size == 21000000
    assert b.download_key_iv(d, keys.node_key) == (KEY, IV)
    # The key travels wrapped for the node only: no plain key or IV on the wire, the cloud key can't unwrap.
    assert KEY.hex().encode() not in data and IV.hex().encode() not in data
    with pytest.raises(b.KeyUnwrapError):
        b.download_key_iv(d, keys.cloud_key)


def test_download_manifest_refusals(keys: BundleKeys) -> None:
    data = download(keys)
    d = b.parse_download_manifest(data)
    with pytest.raises(b.ManifestSignatureError):
        b.verify_download_manifest(d, keys.user_cert)  # not signed by the cloud
    with pytest.raises(b.ManifestSignatureError):
        b.verify_download_manifest(d, keys.cloud_cert, node_cert=keys.user_cert)  # meant for another node
    with pytest.raises(b.ManifestExpired):
        b.verify_download_manifest(d, keys.cloud_cert, now=NOW + dt.timedelta(hours=2))
    tampered = data.replace(b"http://walrus/b/p1", b"http://evil/b/p1")
    with pytest.raises(b.ManifestSignatureError):
        b.verify_download_manifest(b.parse_download_manifest(tampered), keys.cloud_cert)
    start, end = data.index(b"<signed>"), data.index(b"</signed>")
    for pos in range(start, end, 7):
        changed = data[:pos] + (b"0" if data[pos : pos + 1] != b"0" else b"1") + data[pos + 1 :]
        with pytest.raises(b.BundleError):
            b.verify_download_manifest(b.parse_download_manifest(changed), keys.cloud_cert)


def test_download_manifest_needs_matching_urls(keys: BundleKeys) -> None:
    m = b.parse_manifest(build(keys))
    with pytest.raises(ValueError):
        b.build_download_manifest(
            m,
            image_id="emi-1",
            part_urls=URLS[:1],
            cloud_key=keys.cloud_key,
            node_cert=keys.node_cert,
            expires=NOW,
        )


def test_sha1_of_signed_bytes_is_what_openssl_would_sign(keys: BundleKeys) -> None:
    # Interop detail: the signature is PKCS#1 v1.5 over SHA1(mc + image), as `openssl dgst -sha1 -sign` makes.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    m = b.parse_manifest(build(keys))
    digest = hashlib.sha1(m.signed_bytes).digest()
    public = keys.user_cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey)
    public.verify(bytes.fromhex(m.signature), digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
