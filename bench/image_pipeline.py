#!/usr/bin/env python3
"""Image pipeline benchmark: euca's node-side pipeline against the pipe of processes Eucalyptus 4's node ran.

    python bench/image_pipeline.py [--size 1GiB] [--repeat 3] [--base-port 19240] [--work-dir DIR] [--keep]

One command: makes a disk image (deterministic mix of 1 MiB blocks: random, zeros, text), bundles it with
euca's bundler (tar -> SHA1 -> gzip -6 -> AES-128-CBC -> 10 MiB parts, signed manifest), starts a fresh
`euca --role walrus` on 127.0.0.1 with its own data directory, uploads the parts, presigns a GET URL for
each and builds the signed download manifest a CLC hands a node. Then, over the same parts from the same
Walrus, each repetition measures:

  euca           euca.images.pipeline.unbundle_image (what the node's image cache runs), into a cache dir:
                 fetch with bounded concurrency + part SHA1, decrypt, gunzip, untar, image SHA1, fsync
  eucalyptus     curl (presigned URLs, one after the other, to stdout) | openssl enc -d -aes-128-cbc -K -iv
                 | gunzip | tar -x   (no digest checks; the fsync of the result is timed apart)
  stages alone   euca's: fetch (the pipeline's fetcher, parts discarded), decrypt, gunzip, image SHA1,
                 write (+fsync), each in one thread over data staged in memory;
                 Eucalyptus's: curl > /dev/null, openssl, gunzip, tar -x, each over a staged file

Figures are MB/s of *image* bytes (10^6 bytes of the raw image per second, whatever the stage handles), so
every line is comparable: the best of --repeat runs. The ratios printed at the end are the issue's goals:
euca / Eucalyptus pipe >= 1.0, euca / its slowest single stage >= 0.8, and euca against the bound the
cores set (no schedule beats the sum of the stages divided by the number of cores). Results go to
bench/results/image-<time>.json. Walrus runs on the same machine as the pipelines, so its CPU is part of
every fetch. Ports: --base-port (default 19240) only. Everything started is stopped by pid. On a machine
shared with other work, run it under `nice -n -15` and look at the `others` CPU of each run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))  # run from a checkout without installing

import httpx  # noqa: E402
import trio  # noqa: E402
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402
from procs import free_port, proc_stat  # noqa: E402

from euca.core.pki import CloudCA  # noqa: E402
from euca.images import pipeline  # noqa: E402
from euca.images.bundler import bundle_image  # noqa: E402
from euca.protocol import bundle as bundle_format  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"
BUCKET = "bench-images"
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------------
# The image


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    unit = (m.group(2) or "").upper().rstrip("B").rstrip("I")
    scale = {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB, "T": 1024 * 1024 * MiB}[unit]
    return int(float(m.group(1)) * scale)


# Share of 1 MiB blocks of each kind. A used disk image holds compressed files and binaries (random-looking),
# free space (zeros) and text/config/logs: gzip takes this mix to ~52% of its size.
MIX = (("random", 0.4), ("zeros", 0.3), ("text", 0.3))


def make_image(path: Path, size: int, seed: int) -> str:
    """Write the image; return its SHA1. Deterministic for (size, seed)."""
    rng = random.Random(seed)
    words = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 11)))
        for _ in range(4000)
    ]
    words += [b"\n", b"=", b"/usr/lib/", b"0x", b"{", b"}", b"error", b"the"]
    pool = []
    for _ in range(16):
        text = bytearray()
        while len(text) < MiB:
            text += b" ".join(rng.choices(words, k=2000))
        pool.append(bytes(text[:MiB]))
    zeros = bytes(MiB)
    sha1 = hashlib.sha1()
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, MiB)
            r = rng.random()
            if r < MIX[0][1]:
                block = rng.randbytes(MiB)
            elif r < MIX[0][1] + MIX[1][1]:
                block = zeros
            else:
                src = rng.choice(pool)
                cut = rng.randrange(MiB)
                block = src[cut:] + src[:cut]
            block = block[:n]
            f.write(block)
            sha1.update(block)
            left -= n
    return sha1.hexdigest()


def file_sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# Walrus


def process_cpu(pid: int) -> float:
    fields = proc_stat(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Walrus:
    proc: subprocess.Popen[bytes]
    port: int
    data: Path
    log_path: Path
    access_key: str = ""
    secret_key: str = ""
    region: str = "eucalyptus"

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cpu(self) -> float:
        return process_cpu(self.proc.pid)

    def s3(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, read_timeout=120),
        )

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


def start_walrus(data: Path, port: int) -> Walrus:
    if not free_port(port):
        raise RuntimeError(f"port {port} is busy (walrus); pick another --base-port")
    data.mkdir(parents=True)
    log_path = data.parent / "walrus.log"
    euca = shutil.which("euca")
    cmd = [euca] if euca else [sys.executable, "-m", "euca.cli"]
    args = [
        *cmd, "--role", "walrus", "--data-dir", str(data), "--host", HOST,
        "--set", f"walrus.listen.port={port}", "--set", "log_level=WARNING",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, stdout=open(log_path, "wb"), stderr=subprocess.STDOUT, cwd=data.parent, start_new_session=True
    )
    w = Walrus(proc, port, data, log_path)
    creds = data / "credentials" / "eucalyptus" / "admin"
    deadline = time.monotonic() + 60
    while not ((creds / "aws-credentials").exists() and (creds / "eucarc").exists()):
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
            raise RuntimeError(f"euca exited with {proc.returncode}:\n  " + "\n  ".join(tail))
        if time.monotonic() > deadline:
            w.stop()
            raise RuntimeError("euca wrote no credentials within 60 s")
        time.sleep(0.1)
    time.sleep(0.2)
    for line in (creds / "aws-credentials").read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == "aws_access_key_id":
            w.access_key = v.strip()
        elif k.strip() == "aws_secret_access_key":
            w.secret_key = v.strip()
    m = re.search(r"AWS_DEFAULT_REGION=(\S+)", (creds / "eucarc").read_text())
    if m:
        w.region = m.group(1)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(w.endpoint + "/", timeout=2)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                w.stop()
                raise RuntimeError(f"walrus does not answer on {w.endpoint}; see {log_path}") from None
            time.sleep(0.2)
    return w


# ---------------------------------------------------------------------------------------------------------
# Setup: keys, image, bundle, staged intermediate streams


@dataclass
class Setup:
    work: Path
    size: int
    image_sha1: str
    image_name: str
    manifest: bundle_format.BundleManifest
    bundle_dir: Path
    ca: CloudCA
    node_key: Any
    node_cert: Any
    stage_dir: Path

    @property
    def enc_path(self) -> Path:
        return self.stage_dir / "image.enc"

    @property
    def gz_path(self) -> Path:
        return self.stage_dir / "image.tar.gz"

    @property
    def tar_path(self) -> Path:
        return self.stage_dir / "image.tar"


def _load_or_issue(ca: CloudCA, directory: Path, name: str) -> tuple[Any, Any]:
    key_path, cert_path = directory / f"{name}-pk.pem", directory / f"{name}-cert.pem"
    if not (key_path.exists() and cert_path.exists()):
        key_pem, cert_pem = ca.issue(name)
        key_path.write_bytes(key_pem)
        cert_path.write_bytes(cert_pem)
    return (
        bundle_format.load_private_key(key_path.read_bytes()),
        bundle_format.load_certificate(cert_path.read_bytes()),
    )


class Progress:
    def __init__(self, what: str):
        self.what = what
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= 1 or done == total:
            self.last = now
            pct = 100 * done / total if total else 100
            print(
                f"\r  {self.what}: {done / MiB:,.0f} / {total / MiB:,.0f} MiB ({pct:.0f}%)",
                end="",
                flush=True,
            )
            if done == total:
                print()


def prepare(work: Path, size: int, seed: int, compresslevel: int) -> Setup:
    ca = CloudCA.load_or_create(work / "ca")
    user_key, user_cert = _load_or_issue(ca, work / "ca", "user-000000000042")
    node_key, node_cert = _load_or_issue(ca, work / "ca", "node-bench")
    params = {"size": size, "seed": seed, "compresslevel": compresslevel, "mix": MIX, "version": 1}
    params_path = work / "params.json"
    bundle_dir = work / "bundle"
    stage_dir = work / "stage"
    image = work / "disk.img"
    manifest_path = bundle_dir / "disk.img.manifest.xml"
    old = json.loads(params_path.read_text()) if params_path.exists() else None
    if old and old.get("params") == json.loads(json.dumps(params)) and manifest_path.exists():
        print(f"reusing the image and bundle in {work}")
        image_sha1 = old["image_sha1"]
    else:
        shutil.rmtree(bundle_dir, ignore_errors=True)
        shutil.rmtree(stage_dir, ignore_errors=True)
        params_path.unlink(missing_ok=True)
        t0 = time.perf_counter()
        image_sha1 = make_image(image, size, seed)
        print(f"image: {size / MiB:,.0f} MiB written in {time.perf_counter() - t0:.1f} s")
        t0 = time.perf_counter()
        bundle_image(
            image,
            bundle_dir,
            user="000000000042",
            cloud_cert=ca.cert,
            user_cert=user_cert,
            user_key=user_key,
            compresslevel=compresslevel,
            progress=Progress("bundling"),
        )
        print(f"bundled in {time.perf_counter() - t0:.1f} s")
        params_path.write_text(json.dumps({"params": params, "image_sha1": image_sha1}))
    image.unlink(missing_ok=True)  # the staged tar stream holds the same bytes; no need for both
    manifest = bundle_format.parse_manifest(manifest_path.read_bytes())
    setup = Setup(
        work, size, image_sha1, manifest.name, manifest, bundle_dir, ca, node_key, node_cert, stage_dir
    )
    stage_streams(setup)
    return setup


def stage_streams(s: Setup) -> None:
    """The bundle's intermediate streams as files: encrypted (the parts joined), gzip, tar."""
    if s.tar_path.exists():
        return
    s.stage_dir.mkdir(exist_ok=True)
    key, iv = bundle_format.manifest_key_iv(s.manifest, s.ca.key, holder="ec2")
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    inflater = pipeline._inflate_lib.decompressobj(31)
    print("  staging the encrypted, gzip and tar streams for the single-stage runs")
    with open(s.enc_path, "wb") as enc, open(s.gz_path, "wb") as gz, open(s.tar_path, "wb") as tar:
        plain = b""
        for part in s.manifest.parts:
            data = (s.bundle_dir / part.filename).read_bytes()
            enc.write(data)
            plain += decryptor.update(data)
            keep = plain[-16:]
            gz.write(plain[:-16])
            tar.write(inflater.decompress(plain[:-16]))
            plain = keep
        plain += decryptor.finalize()
        plain = plain[: -plain[-1]]
        gz.write(plain)
        tar.write(inflater.decompress(plain) + inflater.flush())


# ---------------------------------------------------------------------------------------------------------
# Measurements. Each returns seconds (and may add details to `info`).


class Span:
    """Wall time and CPU (this process, its waited-for children, Walrus) of exactly the timed region."""

    def __init__(self, ctx: Context, info: dict[str, Any]):
        self.ctx, self.info = ctx, info

    def __enter__(self) -> Span:
        self.busy0 = machine_busy()
        self.cpu0, self.walrus0, self.t0 = cpu_now(), self.ctx.walrus.cpu(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t0
        own = cpu_now() - self.cpu0
        walrus = self.ctx.walrus.cpu() - self.walrus0
        self.info["cpu_s"] = round(own, 2)
        self.info["walrus_cpu_s"] = round(walrus, 2)
        # CPU that other processes on the machine took meanwhile: a run that competed for the cores
        # shows it here (the machine this was written on is shared with other work).
        self.info["others_cpu_s"] = round(max(0.0, machine_busy() - self.busy0 - own - walrus), 2)


@dataclass
class Context:
    setup: Setup
    walrus: Walrus
    source: pipeline.ImageSource
    urls: list[str]
    curl_config: Path
    cache_dir: Path
    concurrency: int
    first: bool = True  # verify outputs on the first repetition


def drop_output(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    os.sync()


def measure_euca(ctx: Context, info: dict[str, Any]) -> float:
    out = ctx.cache_dir / "emi-bench.img"

    async def run() -> float:
        async with httpx.AsyncClient(timeout=120) as client:
            with Span(ctx, info) as span:
                written = await pipeline.unbundle_image(
                    ctx.source, out, client=client, concurrency=ctx.concurrency
                )
        if written.size != ctx.setup.size:
            raise RuntimeError(f"euca wrote {written.size} bytes, expected {ctx.setup.size}")
        return span.seconds

    elapsed = trio.run(run)
    if ctx.first and file_sha1(out) != ctx.setup.image_sha1:
        raise RuntimeError("euca's output differs from the image")
    drop_output(ctx.cache_dir)
    return elapsed


def measure_eucalyptus_pipe(ctx: Context, info: dict[str, Any]) -> float:
    key, iv = ctx.source.key, ctx.source.iv
    out_dir = ctx.cache_dir / "pipe"
    out_dir.mkdir()
    span = Span(ctx, info).__enter__()
    curl = subprocess.Popen(["curl", "-sS", "--fail", "-K", str(ctx.curl_config)], stdout=subprocess.PIPE)
    openssl = subprocess.Popen(
        ["openssl", "enc", "-d", "-aes-128-cbc", "-K", key.hex(), "-iv", iv.hex()],
        stdin=curl.stdout,
        stdout=subprocess.PIPE,
    )
    assert curl.stdout is not None and openssl.stdout is not None
    curl.stdout.close()
    gunzip = subprocess.Popen(["gunzip", "-c"], stdin=openssl.stdout, stdout=subprocess.PIPE)
    assert gunzip.stdout is not None
    openssl.stdout.close()
    tar = subprocess.Popen(["tar", "-x", "-C", str(out_dir)], stdin=gunzip.stdout)
    gunzip.stdout.close()
    codes = [p.wait() for p in (curl, openssl, gunzip, tar)]
    span.__exit__()
    elapsed = span.seconds
    if any(codes):
        raise RuntimeError(f"the pipe failed: curl/openssl/gunzip/tar exited {codes}")
    result = out_dir / ctx.setup.image_name
    t0 = time.perf_counter()
    fd = os.open(result, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    info["fsync_s"] = round(time.perf_counter() - t0, 3)
    if ctx.first and file_sha1(result) != ctx.setup.image_sha1:
        raise RuntimeError("the pipe's output differs from the image")
    drop_output(ctx.cache_dir)
    return elapsed


def measure_fetch(ctx: Context, info: dict[str, Any]) -> float:
    async def run() -> float:
        async with httpx.AsyncClient(timeout=120) as client:
            send, recv = trio.open_memory_channel[Any](0)
            got = 0
            with Span(ctx, info) as span:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(
                        pipeline.fetch_in_order, ctx.source.parts, client, ctx.concurrency, send
                    )
                    async with recv:
                        async for chunk in recv:
                            got += len(chunk.data)
                            chunk.release()
        if got != ctx.setup.manifest.bundled_size:
            raise RuntimeError(f"fetched {got} bytes, expected {ctx.setup.manifest.bundled_size}")
        return span.seconds

    return trio.run(run)


def load_chunks(path: Path, chunk: int) -> list[bytearray]:
    """A staged stream in memory, in `chunk`-byte pieces (touched once, so page faults are not timed)."""
    out = []
    with open(path, "rb", buffering=0) as f:
        while True:
            buf = bytearray(chunk)
            n = f.readinto(buf)
            if not n:
                break
            del buf[n:]
            out.append(buf)
    return out


# The single stages below run the pipeline's own code for that stage (the classes its tasks call in
# worker threads), alone, in one thread, over input staged in memory in the sizes the pipeline passes on.


def measure_decrypt(ctx: Context, info: dict[str, Any]) -> float:
    chunks = load_chunks(ctx.setup.enc_path, bundle_format.PART_SIZE)
    out = bytearray(bundle_format.PART_SIZE + 32)
    with Span(ctx, info) as span:
        decrypter = pipeline.Decrypter(ctx.source.key, ctx.source.iv)
        for c in chunks:
            decrypter.update_into(memoryview(c), out)
        decrypter.finish()
    return span.seconds


def measure_gunzip(ctx: Context, info: dict[str, Any]) -> float:
    chunks = load_chunks(ctx.setup.gz_path, bundle_format.PART_SIZE)
    info["decoder"] = pipeline._inflate_lib.__name__
    produced = 0
    with Span(ctx, info) as span:
        inflater = pipeline.Inflater()
        for c in chunks:
            inflater.add(memoryview(c))
            while pieces := inflater.step():
                produced += sum(len(p) for p in pieces)
        inflater.finish()
    elapsed = span.seconds
    if produced != ctx.setup.tar_path.stat().st_size:
        raise RuntimeError(f"gunzip produced {produced} bytes")
    return elapsed


def tar_batches(ctx: Context) -> list[list[bytes]]:
    """The tar stream as the inflate stage hands it on: batches of INFLATE_OUT in INFLATE_PIECE pieces."""
    pieces = [bytes(c) for c in load_chunks(ctx.setup.tar_path, pipeline.INFLATE_PIECE)]
    per_batch = max(1, pipeline.INFLATE_OUT // pipeline.INFLATE_PIECE)
    return [pieces[i : i + per_batch] for i in range(0, len(pieces), per_batch)]


def measure_digest(ctx: Context, info: dict[str, Any]) -> float:
    batches = tar_batches(ctx)
    with Span(ctx, info) as span:
        h = hashlib.sha1()
        for batch in batches:
            for piece in batch:
                h.update(piece)
    elapsed = span.seconds
    if h.hexdigest() != ctx.setup.manifest.digest:
        raise RuntimeError("the staged tar stream does not match the manifest's digest")
    return elapsed


def measure_write(ctx: Context, info: dict[str, Any]) -> float:
    batches = tar_batches(ctx)
    path = ctx.cache_dir / "write-only.img"
    with Span(ctx, info) as span:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.posix_fallocate(fd, 0, ctx.setup.size)
        extractor = pipeline.TarExtractor(fd, ctx.setup.size, hash_stream=False)
        for batch in batches:
            extractor.feed(batch)
        os.fsync(fd)
        os.close(fd)
    elapsed = span.seconds
    if extractor.written != ctx.setup.size:
        raise RuntimeError(f"wrote {extractor.written} bytes")
    drop_output(ctx.cache_dir)
    return elapsed


def _run_timed(
    ctx: Context, info: dict[str, Any], args: list[str], stdin: Path | None = None, stdout: str = os.devnull
) -> float:
    with open(stdin or os.devnull, "rb") as src, open(stdout, "wb") as dst:
        with Span(ctx, info) as span:
            p = subprocess.run(args, stdin=src, stdout=dst, stderr=subprocess.PIPE)
        elapsed = span.seconds
    if p.returncode:
        raise RuntimeError(f"{args[0]} exited {p.returncode}: {p.stderr.decode(errors='replace')[-300:]}")
    return elapsed


def measure_curl(ctx: Context, info: dict[str, Any]) -> float:
    return _run_timed(ctx, info, ["curl", "-sS", "--fail", "-K", str(ctx.curl_config)])


def measure_openssl(ctx: Context, info: dict[str, Any]) -> float:
    key, iv = ctx.source.key.hex(), ctx.source.iv.hex()
    return _run_timed(
        ctx, info, ["openssl", "enc", "-d", "-aes-128-cbc", "-K", key, "-iv", iv], stdin=ctx.setup.enc_path
    )


def measure_cli_gunzip(ctx: Context, info: dict[str, Any]) -> float:
    return _run_timed(ctx, info, ["gunzip", "-c"], stdin=ctx.setup.gz_path)


def measure_tar(ctx: Context, info: dict[str, Any]) -> float:
    out_dir = ctx.cache_dir / "tar"
    out_dir.mkdir()
    elapsed = _run_timed(ctx, info, ["tar", "-x", "-C", str(out_dir)], stdin=ctx.setup.tar_path)
    t0 = time.perf_counter()
    fd = os.open(out_dir / ctx.setup.image_name, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    info["fsync_s"] = round(time.perf_counter() - t0, 3)
    drop_output(ctx.cache_dir)
    return elapsed


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    run: Callable[[Context, dict[str, Any]], float]
    group: str  # "pipeline", "euca-stage", "cli-stage"


MEASURES = [
    Measure("euca", "euca pipeline (unbundle_image)", measure_euca, "pipeline"),
    Measure(
        "eucalyptus", "Eucalyptus 4 pipe: curl | openssl | gunzip | tar", measure_eucalyptus_pipe, "pipeline"
    ),
    Measure("fetch", "fetch: pipeline fetcher, HTTP + part SHA1", measure_fetch, "euca-stage"),
    Measure("decrypt", "decrypt: Decrypter (AES-128-CBC, cryptography)", measure_decrypt, "euca-stage"),
    Measure("gunzip", "gunzip: Inflater ({decoder})", measure_gunzip, "euca-stage"),
    Measure("digest", "image digest: SHA1 of the tar stream", measure_digest, "euca-stage"),
    Measure("write", "write: TarExtractor (untar, os.write) + fsync", measure_write, "euca-stage"),
    Measure("curl", "curl > /dev/null", measure_curl, "cli-stage"),
    Measure("openssl", "openssl enc -d > /dev/null", measure_openssl, "cli-stage"),
    Measure("cli-gunzip", "gunzip -c > /dev/null", measure_cli_gunzip, "cli-stage"),
    Measure("tar", "tar -x (fsync apart)", measure_tar, "cli-stage"),
]


# ---------------------------------------------------------------------------------------------------------


def presign_urls(w: Walrus, keys: list[str]) -> list[str]:
    s3 = w.s3()
    return [
        s3.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": k}, ExpiresIn=7200)
        for k in keys
    ]


def upload(w: Walrus, s: Setup) -> list[str]:
    s3 = w.s3()
    s3.create_bucket(Bucket=BUCKET)
    keys = []
    total = s.manifest.bundled_size
    progress = Progress("uploading parts to walrus")
    done = 0
    for part in s.manifest.parts:
        key = f"disk/{part.filename}"
        with open(s.bundle_dir / part.filename, "rb") as f:
            s3.put_object(Bucket=BUCKET, Key=key, Body=f)
        done += (s.bundle_dir / part.filename).stat().st_size
        progress(done, total)
        keys.append(key)
    manifest = s.bundle_dir / "disk.img.manifest.xml"
    s3.put_object(Bucket=BUCKET, Key=f"disk/{manifest.name}", Body=manifest.read_bytes())
    return keys


def node_source(s: Setup, urls: list[str]) -> pipeline.ImageSource:
    """What a node makes of the download manifest a CLC signs for it (the real path, keys and all)."""
    data = bundle_format.build_download_manifest(
        s.manifest,
        image_id="emi-00bench0",
        part_urls=urls,
        cloud_key=s.ca.key,
        node_cert=s.node_cert,
        expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=2),
    )
    dm = bundle_format.parse_download_manifest(data)
    bundle_format.verify_download_manifest(dm, s.ca.cert, node_cert=s.node_cert, now=dt.datetime.now(dt.UTC))
    return pipeline.source_from_download_manifest(dm, s.node_key)


def machine_busy() -> float:
    """CPU seconds all processes have used since boot (every core), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(limit: float, idle_share: float = 0.85) -> float:
    """Wait (up to `limit` s) until the machine was mostly idle for half a second; the busy share seen."""
    deadline = time.monotonic() + limit
    cores = os.cpu_count() or 1
    while True:
        b0 = machine_busy()
        time.sleep(0.5)
        busy = (machine_busy() - b0) / (0.5 * cores)
        if busy <= 1 - idle_share or time.monotonic() >= deadline:
            return busy


def cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def tool_versions() -> dict[str, str]:
    out = {}
    for name, args in (("openssl", ["openssl", "version"]), ("gzip", ["gzip", "--version"]),
                       ("tar", ["tar", "--version"]), ("curl", ["curl", "--version"])):  # fmt: skip
        try:
            out[name] = subprocess.run(args, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            out[name] = "missing"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=parse_size, default=parse_size("1GiB"), help="image size (default 1GiB)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the image's content (default 1)")
    ap.add_argument("--compresslevel", type=int, default=6, help="gzip level of the bundle (default 6)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the best counts")
    ap.add_argument("--concurrency", type=int, default=pipeline.DEFAULT_CONCURRENCY, help="parts in flight")
    ap.add_argument("--only", default="", help="comma list of: " + ",".join(m.key for m in MEASURES))
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=20,
        help="before each run, wait up to this many seconds for the machine to be 85%% idle (0: do not)",
    )
    ap.add_argument("--base-port", type=int, default=19240, help="walrus listens here (default 19240)")
    ap.add_argument(
        "--work-dir", default=None, help="keep the image and bundle here and reuse them next time"
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    opts = ap.parse_args()

    missing = [t for t in ("curl", "openssl", "gunzip", "tar") if shutil.which(t) is None]
    if missing:
        print(
            f"missing tools: {', '.join(missing)} (apt-get install -y {' '.join(missing)})", file=sys.stderr
        )
        return 2
    only = {k.strip() for k in opts.only.split(",") if k.strip()}
    measures = [m for m in MEASURES if not only or m.key in only]

    if opts.work_dir:
        work = Path(opts.work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        temporary = False
    else:
        work = Path(tempfile.mkdtemp(prefix="euca-image-bench-"))
        temporary = not opts.keep
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir()
    walrus: Walrus | None = None
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        print(f"work directory {work}")
        setup = prepare(work, opts.size, opts.seed, opts.compresslevel)
        m = setup.manifest
        walrus = start_walrus(run_dir / "walrus", opts.base_port)
        keys = upload(walrus, setup)
        urls = presign_urls(walrus, keys)
        curl_config = run_dir / "curl-urls.txt"
        curl_config.write_text("".join(f'url = "{u}"\n' for u in urls))
        cache_dir = run_dir / "cache"
        cache_dir.mkdir()
        ctx = Context(setup, walrus, node_source(setup, urls), urls, curl_config, cache_dir, opts.concurrency)
        # Warm Walrus's page cache and the connection path once, untimed.
        _run_timed(ctx, {}, ["curl", "-sS", "--fail", "-K", str(curl_config)])

        header = {
            "image": f"{setup.size:,} bytes ({setup.size / MiB / 1024:.2f} GiB), 1 MiB blocks: "
            + ", ".join(f"{int(share * 100)}% {kind}" for kind, share in MIX)
            + f" (seed {opts.seed})",
            "bundle": f"{m.bundled_size:,} bytes in {len(m.parts)} parts, gzip -{opts.compresslevel} "
            f"({100 * m.bundled_size / max(setup.size, 1):.0f}% of the image)",
            "machine": f"{os.cpu_count()} cores ({cpu_model()}), load average at start "
            + " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "python": platform.python_version(),
            "inflate": pipeline._inflate_lib.__name__,
            "tools": tool_versions(),
            "walrus": f"euca --role walrus on {walrus.endpoint}, same machine (its CPU counts in every fetch)",
        }
        for k, v in header.items():
            print(f"{k}: {v}")
        print(f"runs: {opts.repeat} of each, interleaved; figures are MB/s of image bytes (best run)\n")

        runs: dict[str, list[dict[str, Any]]] = {mm.key: [] for mm in measures}
        for rep in range(opts.repeat):
            for mm in measures:
                info: dict[str, Any] = {}
                if opts.quiet_wait > 0:
                    info["busy_before"] = round(wait_for_quiet(opts.quiet_wait), 2)
                seconds = mm.run(ctx, info)
                info.update(seconds=round(seconds, 3), mb_s=round(setup.size / seconds / 1e6, 1))
                runs[mm.key].append(info)
                print(f"  run {rep + 1}: {mm.key:<11} {info['mb_s']:>8.1f} MB/s  {seconds:6.2f} s  "
                      f"cpu {info['cpu_s']:.2f} s + walrus {info['walrus_cpu_s']:.2f} s, others {info['others_cpu_s']:.2f} s", flush=True)  # fmt: skip
            ctx.first = False

        best = {k: max(v, key=lambda r: r["mb_s"]) for k, v in runs.items() if v}
        print()
        print(f"{'':52} {'MB/s':>8} {'s':>6} {'cpu s':>6}")
        groups = (("pipeline", "pipelines"), ("euca-stage", "euca's stages alone"), ("cli-stage", "Eucalyptus stages alone"))  # fmt: skip
        for group, title in groups:
            items = [mm for mm in measures if mm.group == group and mm.key in best]
            if not items:
                continue
            print(title)
            for mm in items:
                r = best[mm.key]
                label = mm.label.format(decoder=r.get("decoder", ""))
                extra = f"  (+fsync {r['fsync_s']:.2f} s)" if "fsync_s" in r else ""
                cpu = r["cpu_s"] + r["walrus_cpu_s"]
                print(f"  {label:<50} {r['mb_s']:>8.1f} {r['seconds']:>6.2f} {cpu:>6.2f}{extra}")
        ratios: dict[str, float] = {}
        print()
        if "euca" in best and "eucalyptus" in best:
            ratios["euca/eucalyptus"] = best["euca"]["mb_s"] / best["eucalyptus"]["mb_s"]
            print(f"euca / Eucalyptus pipe:                 {ratios['euca/eucalyptus']:.2f}   (goal >= 1.0)")
        stages = [mm.key for mm in measures if mm.group == "euca-stage" and mm.key in best]
        if "euca" in best and stages:
            slowest = min(stages, key=lambda k: best[k]["mb_s"])
            ratios["euca/slowest_stage"] = best["euca"]["mb_s"] / best[slowest]["mb_s"]
            print(f"euca / its slowest stage ({slowest}):{' ' * max(0, 13 - len(slowest))}"
                  f"{ratios['euca/slowest_stage']:.2f}   (goal >= 0.8)")  # fmt: skip
        if "euca" in best and len(stages) >= 4:
            # Stages overlap only as far as there are cores for them: the pipeline cannot beat the
            # slowest stage, nor the sum of all stages' work spread over every core.
            cores = os.cpu_count() or 1
            total = sum(best[k]["seconds"] for k in stages)
            bound = max(max(best[k]["seconds"] for k in stages), total / cores)
            ratios["euca/core_bound"] = bound / best["euca"]["seconds"]
            print(
                f"euca / the {cores}-core bound:             {ratios['euca/core_bound']:.2f}   "
                f"(bound: max(slowest stage, sum of the stages {total:.2f} s / {cores} cores) = {bound:.2f} s, "
                f"{setup.size / bound / 1e6:.0f} MB/s)"
            )
        cli = [mm.key for mm in measures if mm.group == "cli-stage" and mm.key in best]
        if "eucalyptus" in best and cli:
            slowest = min(cli, key=lambda k: best[k]["mb_s"])
            ratios["eucalyptus/slowest_stage"] = best["eucalyptus"]["mb_s"] / best[slowest]["mb_s"]
            print(
                f"Eucalyptus pipe / its slowest stage ({slowest}): {ratios['eucalyptus/slowest_stage']:.2f}"
            )
        print(f"\n{os.cpu_count()} cores on this machine: the pipelines, Walrus and the tools share them.")
        print("load average at end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))

        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"image-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"header": header, "runs": runs, "best": best, "ratios": ratios}, indent=2))
        print(f"results: {out}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if walrus is not None:
            walrus.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
        elif not opts.work_dir:
            print(f"kept {work}")


if __name__ == "__main__":
    sys.exit(main())
