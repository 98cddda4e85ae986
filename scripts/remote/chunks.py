"""Files and folders as one tar stream cut into chunks of at most N MiB, and back.

For moving a training set, weights or a checkpoint to or from a machine that takes only small files:
  python scripts/remote/chunks.py pack OUT_DIR --chunk-mib N [NAME=]PATH...   # NAME: where PATH lands
  python scripts/remote/chunks.py unpack CHUNK_DIR DEST                       # once every chunk is there
`pack` writes part-00000, part-00001, ... and chunks.json (sizes and SHA-256 of every chunk and of the
whole stream); `unpack` checks them all before it extracts anything. Nothing here knows about training.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import tarfile
from pathlib import Path

MANIFEST = "chunks.json"
CHUNK_PATTERN = "part-{:05d}"
MIB = 2 ** 20


class _ChunkWriter(io.RawIOBase):
    """A write-only stream that starts a new chunk file every `chunk_bytes` bytes."""

    def __init__(self, folder: Path, chunk_bytes: int):
        self.folder, self.chunk_bytes = folder, chunk_bytes
        self.chunks: list[dict] = []
        self.whole = hashlib.sha256()
        self._file = None
        self._hash = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        while view:
            if self._file is None or self.chunks[-1]["bytes"] == self.chunk_bytes:
                self._next()
            n = min(len(view), self.chunk_bytes - self.chunks[-1]["bytes"])
            self._file.write(view[:n])
            self._hash.update(view[:n])
            self.whole.update(view[:n])
            self.chunks[-1]["bytes"] += n
            view = view[n:]
        return len(data)

    def _next(self) -> None:
        self._finish()
        name = CHUNK_PATTERN.format(len(self.chunks))
        self._file, self._hash = open(self.folder / name, "wb"), hashlib.sha256()
        self.chunks.append({"name": name, "bytes": 0})

    def _finish(self) -> None:
        if self._file is not None:
            self._file.close()
            self.chunks[-1]["sha256"] = self._hash.hexdigest()
            self._file = None

    def close(self) -> None:
        self._finish()
        super().close()


def pack(items: dict[str, str | os.PathLike], out: str | os.PathLike, chunk_mib: float) -> list[Path]:
    """Write `items` ({name in the archive: file or folder}) as chunks of at most `chunk_mib` MiB into `out`."""
    out = Path(out)
    chunk_bytes = int(chunk_mib * MIB)
    if chunk_bytes < 1:
        raise ValueError(f"chunk_mib must be positive, got {chunk_mib}")
    for name, path in items.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"{name}: {path} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*"):   # a re-pack must not leave chunks of an earlier, longer stream
        old.unlink()
    writer = _ChunkWriter(out, chunk_bytes)
    with tarfile.open(fileobj=writer, mode="w|") as tar:
        for name, path in items.items():
            tar.add(str(path), arcname=name)
    writer.close()
    manifest = {"chunks": writer.chunks, "bytes": sum(c["bytes"] for c in writer.chunks),
                "sha256": writer.whole.hexdigest(), "items": sorted(items)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return [out / c["name"] for c in writer.chunks]


def missing_chunks(folder: str | os.PathLike) -> list[str]:
    """Names of the chunks that chunks.json lists and the folder does not hold (yet)."""
    folder = Path(folder)
    manifest = _manifest(folder)
    return [c["name"] for c in manifest["chunks"] if not (folder / c["name"]).is_file()]


def unpack(folder: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Check every chunk in `folder` against chunks.json, then extract the archive into `dest`; its item names."""
    folder, dest = Path(folder), Path(dest)
    manifest = _manifest(folder)
    missing = missing_chunks(folder)
    if missing:
        raise FileNotFoundError(f"{folder}: {len(missing)} of {len(manifest['chunks'])} chunks missing: "
                                f"{', '.join(missing)}")
    whole = hashlib.sha256()
    for c in manifest["chunks"]:
        data = (folder / c["name"]).read_bytes()
        if len(data) != c["bytes"] or hashlib.sha256(data).hexdigest() != c["sha256"]:
            raise ValueError(f"{folder / c['name']}: size or SHA-256 differs from {MANIFEST}")
        whole.update(data)
    if whole.hexdigest() != manifest["sha256"]:
        raise ValueError(f"{folder}: the chunks together differ from {MANIFEST}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=_ChunkReader(folder, manifest["chunks"]), mode="r|") as tar:
        tar.extractall(dest, filter="data")   # no absolute paths, no links out of dest
    return manifest["items"]


class _ChunkReader(io.RawIOBase):
    """The chunks read back as one stream."""

    def __init__(self, folder: Path, chunks: list[dict]):
        self._paths = [folder / c["name"] for c in chunks]
        self._file = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self._file is None:
                if not self._paths:
                    return 0
                self._file = open(self._paths.pop(0), "rb")
            n = self._file.readinto(buffer)
            if n:
                return n
            self._file.close()
            self._file = None


def _manifest(folder: Path) -> dict:
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {MANIFEST} (not a folder written by chunks.py pack)")
    return json.loads(path.read_text())


def parse_items(specs: list[str]) -> dict[str, Path]:
    """["NAME=PATH" or "PATH", ...] -> {name: path}; a bare PATH keeps its own name."""
    items = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = (name, path) if sep else (Path(spec).name, spec)
        if name in items:
            raise ValueError(f"two items named {name}")
        items[name] = Path(path)
    return items


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="files and folders into chunks")
    p.add_argument("out", type=Path, help="folder for the chunks and chunks.json")
    p.add_argument("items", nargs="+", help="PATH or NAME=PATH (NAME: its path in the archive)")
    p.add_argument("--chunk-mib", type=float, required=True, help="largest chunk, in MiB")
    u = sub.add_parser("unpack", help="chunks back into files, once all of them are there")
    u.add_argument("chunks", type=Path, help="folder with chunks.json and the chunks")
    u.add_argument("dest", type=Path, help="folder to extract into")
    args = ap.parse_args(argv)
    if args.command == "pack":
        paths = pack(parse_items(args.items), args.out, args.chunk_mib)
        print(f"wrote {len(paths)} chunks + {MANIFEST} to {args.out}")
        return 0
    missing = missing_chunks(args.chunks)
    if missing:
        print(f"waiting for {len(missing)} chunks: {', '.join(missing)}")
        return 3
    items = unpack(args.chunks, args.dest)
    print(f"unpacked {', '.join(items)} into {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
