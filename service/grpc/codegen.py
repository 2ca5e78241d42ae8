"""Compile protos/*.proto into generated/: python -m service.grpc.codegen.

protoc (from grpcio-tools) writes the files' descriptors, compiled and checked, as one
FileDescriptorSet (generated/descriptors.binpb); service/grpc/messages.py builds the
message classes from it. That is what a *_pb2.py module does at import too, but there into
protobuf's default pool, where Triton's own client registers messages of the same names
(package `inference`, from its grpc_service.proto): the two could not live in one process.
In a pool of their own they can, so the service, its tests and anyone's program may use
tritonclient beside it.

generated/descriptors.sha256 records a digest of the .proto files the set was made from,
so a set older than the files is made again rather than used. This module imports only
the standard library at the top: the image's build stage runs it with nothing but
grpcio-tools installed.
"""

import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

PROTOS_DIR = Path(__file__).resolve().parent / "protos"
GENERATED_DIR = Path(__file__).resolve().parent / "generated"
DESCRIPTOR_SET = GENERATED_DIR / "descriptors.binpb"
DIGEST_FILE = GENERATED_DIR / "descriptors.sha256"


class CodegenError(RuntimeError):
    """The compiled descriptors are missing or stale and cannot be made here."""


def proto_files() -> list[Path]:
    """The .proto files, sorted."""
    return sorted(PROTOS_DIR.glob("*.proto"))


def protos_digest() -> str:
    """A digest of every .proto file's name and bytes."""
    digest = hashlib.sha256()
    for path in proto_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_current() -> bool:
    """Whether generated/ holds descriptors compiled from the .proto files as they are now."""
    try:
        recorded = DIGEST_FILE.read_text(encoding="ascii").strip()
    except OSError:
        return False
    return recorded == protos_digest() and DESCRIPTOR_SET.is_file()


def generate() -> None:
    """Run protoc (from grpcio-tools) on every .proto file into generated/."""
    if importlib.util.find_spec("grpc_tools") is None:
        raise CodegenError("service/grpc/generated/ is missing or older than "
                           "service/grpc/protos/: install grpcio-tools "
                           "(requirements-codegen.txt) and run python -m service.grpc.codegen")
    digest = protos_digest()
    GENERATED_DIR.mkdir(exist_ok=True)
    # Made beside the target and moved in, the digest last: a process that reads meanwhile
    # sees the old set or the new, and a stale set is never marked current. Two processes
    # generating at once write the same bytes.
    with tempfile.TemporaryDirectory(dir=GENERATED_DIR, prefix=".staging-") as staging:
        target = Path(staging) / DESCRIPTOR_SET.name
        # In a process of its own: protoc's C++ protobuf aborts a process that has already
        # loaded another copy of it (TensorFlow's, in the test run).
        finished = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={PROTOS_DIR}",
             f"--descriptor_set_out={target}", *(str(path) for path in proto_files())],
            capture_output=True, text=True, timeout=120)
        if finished.returncode != 0:
            raise CodegenError(f"protoc exited with {finished.returncode}: {finished.stderr}")
        (Path(staging) / DIGEST_FILE.name).write_text(digest + "\n", encoding="ascii")
        os.replace(target, DESCRIPTOR_SET)
        os.replace(Path(staging) / DIGEST_FILE.name, DIGEST_FILE)


def ensure() -> None:
    """Compile unless generated/ is current (the api image's always is)."""
    if not is_current():
        generate()


def main(argv: list[str]) -> int:
    """Compile; with --check, only say whether the compiled descriptors are current."""
    if argv == ["--check"]:
        current = is_current()
        print("current" if current else "missing or stale")
        return 0 if current else 1
    generate()
    print(f"compiled {', '.join(path.name for path in proto_files())} into {DESCRIPTOR_SET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
