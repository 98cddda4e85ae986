"""Sharded dataset outputs: WebDataset tar files or Parquet files of `shard_size` samples each, in place of a
folder tree of images.

A shard is named OUT/shard-000000.tar (or .parquet), numbered in the order the driver cuts the plan; each is
written to a temporary file and renamed when whole, so the shards in OUT are always whole. A sample is a pair's
encoded image and what folder mode would have known of it: its content, its style and the output name it would
have had (relative to OUT), under a key made from that name (`sample_key`). A tar shard holds `<key>.<format>`
then `<key>.json` for each sample (the WebDataset layout: a sample's files adjacent, grouped by key); a Parquet
shard holds one row per sample (key, content, style, output, image, width, height).

The shards are the checkpoint: a rerun reads the keys of the finished shards (`read_shards`) and plans the
rest into new shards numbered after them. A tar has no index of its own (its member names are spread through
it, one read each), so beside each tar a small `shard-000000.index.json` lists its keys, its image format and
the tar's size; a Parquet file's key column is read alone. An index that is not its tar's (another size: a
copy cut short, a tar rewritten after its index) is not trusted: the tar is read through, and a tar without its
end-of-archive marker (cut short between two members, which tarfile alone does not notice) is refused. Nothing
here imports torch; pyarrow is imported for Parquet shards only.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ..atomic import atomic_write, is_temp_of
from ..errors import JobError, one_line

SHARD_KINDS = ("webdataset", "parquet")
SHARD_SUFFIXES = {"webdataset": ".tar", "parquet": ".parquet"}
INDEX_SUFFIX = ".index.json"          # beside a tar shard: its keys
DEFAULT_SHARD_SIZE = 1000
PARQUET_ROWS_PER_GROUP = 100           # images are large rows: row groups of tens of MB at most
_SHARD = re.compile(r"shard-(\d+)(\.tar|\.parquet|\.index\.json)")
# percent escapes (urllib.parse.unquote undoes them): '%' for reversibility, '.' for WebDataset's key rule, ':' and
# backslash because a Windows extractor reads them as a drive and a separator (C:/x or \x would leave the folder)
_ESCAPES = str.maketrans({"%": "%25", ".": "%2E", ":": "%3A", "\\": "%5C"})
_TEMP = re.compile(r"\.(shard-\d+(?:\.index)?)\.")   # what atomic_write's temp names start with


@dataclass
class Sample:
    """One stylized pair as a shard holds it: its key, the pair, the relative output name folder mode would
    write, the encoded image and its size."""
    key: str
    content: str
    style: str
    output: str
    data: bytes
    width: int
    height: int

    def meta(self) -> dict:
        return {"key": self.key, "content": self.content, "style": self.style, "output": self.output,
                "width": self.width, "height": self.height}


@dataclass
class FinishedShards:
    """The shards of one kind already in OUT: the keys they hold, their image formats, the number a new shard
    gets next, and the other (not hidden) names in OUT."""
    keys: set[str] = field(default_factory=set)
    formats: set[str] = field(default_factory=set)
    next_number: int = 0
    others: set[str] = field(default_factory=set)


def shard_name(number: int, kind: str) -> str:
    return f"shard-{number:06d}{SHARD_SUFFIXES[kind]}"


def index_path(shard) -> Path:
    """The keys file beside a tar shard: shard-000000.tar -> shard-000000.index.json."""
    shard = Path(shard)
    return shard.with_name(shard.name.split(".")[0] + INDEX_SUFFIX)


def sample_key(output: str) -> str:
    """The key of a sample: its relative output name without the suffix, with '%', '.', ':' and '\\' escaped
    (%25, %2E, %3A, %5C). WebDataset splits a member name at the first dot of its last part (key, then
    extension), so a key has no dot; with no '..' part, drive or backslash either, a tar extracted anywhere
    stays in its folder; the escape is reversible, so outputs that differ in more than their suffix never share
    a key; a/x.v2_stylized_s.png -> a/x%2Ev2_stylized_s."""
    return os.path.splitext(Path(output).as_posix())[0].translate(_ESCAPES)


def read_shards(root, kind: str | None) -> FinishedShards:
    """The finished shards of `kind` in the output folder `root` (kind None: a folder-tree run, which must find
    none), removing the temporary files of shard writes a killed run cut short. JobError for shards of another
    kind (a run without --shards, or with the other kind, would write beside them) and for a shard that
    cannot be read."""
    root = Path(root)
    try:
        names = os.listdir(root)
    except (FileNotFoundError, NotADirectoryError):
        return FinishedShards()
    finished = FinishedShards()
    by_kind: dict[str, list[str]] = {}
    numbers = [-1]
    for name in names:
        match = _SHARD.fullmatch(name)
        if match is None:
            if name.startswith("."):
                _remove_if_temp(root, name)
            else:
                finished.others.add(name)
            continue
        numbers.append(int(match.group(1)))   # an index without its shard too: a new shard must not take its number
        found = next((k for k, s in SHARD_SUFFIXES.items() if s == match.group(2)), None)
        if found is not None:
            by_kind.setdefault(found, []).append(name)
    if len(by_kind) > 1:
        raise JobError(f"{root}: holds shards of both kinds ({', '.join(sorted(n[0] for n in by_kind.values()))}): "
                       "move one kind away, or write elsewhere")
    for other, found in by_kind.items():
        if other != kind:
            hint = f"add --shards {other} to resume them" if kind is None else f"resume them with --shards {other}"
            raise JobError(f"{root}: holds {other} shards of an earlier run ({found[0]}): {hint}, or write elsewhere")
    finished.next_number = max(numbers) + 1
    for name in by_kind.get(kind, []):
        keys, formats = shard_contents(root / name, kind)
        finished.keys.update(keys)
        finished.formats.update(formats)
    return finished


def _remove_if_temp(root: Path, name: str) -> None:
    match = _TEMP.match(name)
    if match is None:
        return
    for suffix in (*SHARD_SUFFIXES.values(), ".json"):
        if is_temp_of(name, root / (match.group(1) + suffix), suffix):
            try:
                os.unlink(root / name)
            except FileNotFoundError:
                pass
            return


def shard_contents(path, kind: str) -> tuple[list[str], set[str]]:
    """The keys of the samples in a finished shard and its image formats (a tar's from its index file when that
    is the tar's). JobError for a shard that cannot be read, or a tar cut short."""
    path = Path(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq
            with pq.ParquetFile(path) as f:
                image_format = (f.schema_arrow.metadata or {}).get(b"image_format", b"").decode()
                keys = [str(k) for k in f.read(columns=["key"]).column("key").to_pylist()]
                return keys, {image_format} if image_format else set()
        index = _read_index(path)
        if index is not None:
            return index["keys"], {index["format"]}
        return _tar_contents(path)
    except Exception as e:   # noqa: BLE001  (tarfile, OSError and pyarrow raise several types on a damaged file)
        raise JobError(f"{path}: cannot read the shard ({one_line(e)}): move it away (its pairs are then "
                       "done again)") from None


def _read_index(tar: Path) -> dict | None:
    """A tar's index file, or None where there is none (a run killed between the tar's rename and the index's),
    it cannot be read, or it is another tar's (another name or size)."""
    try:
        index = json.loads(index_path(tar).read_text(encoding="utf-8"))
        if index["shard"] == tar.name and index["size"] == tar.stat().st_size and isinstance(index["keys"], list):
            return {"keys": [str(k) for k in index["keys"]], "format": str(index["format"])}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _tar_contents(path: Path) -> tuple[list[str], set[str]]:
    """A tar's keys and image formats, read through it; ValueError where its end-of-archive marker is missing."""
    with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        names = [m.name for m in tar]
        f.seek(tar.offset)   # where tarfile stopped: the end-of-archive marker of a whole tar (two zero blocks)
        if f.read(2 * tarfile.BLOCKSIZE) != bytes(2 * tarfile.BLOCKSIZE):
            raise ValueError(f"cut short or damaged after {len(names)} members (no end-of-archive marker)")
    return (list(dict.fromkeys(_member_key(n) for n in names)),
            {n.rpartition(".")[2] for n in names if not n.endswith(".json")})


def _member_key(name: str) -> str:
    folder, _, base = name.rpartition("/")
    return f"{folder}/{base.split('.')[0]}" if folder else base.split(".")[0]


class _Empty(Exception):
    """No sample to write: the shard is not made."""


def write_shard(path, kind: str, image_format: str, samples: Iterable[Sample]) -> int:
    """Write the samples (taken as they come, so that a shard is never all in memory) into the shard `path`
    atomically, with a tar's index file after it; returns how many; no file for none. OSError if the shard
    cannot be written (nothing is left then); a tar whose index cannot be written is whole all the same (a
    rerun reads it through)."""
    keys: list[str] = []

    def write(tmp: str) -> None:
        if kind == "parquet":
            _write_parquet(tmp, image_format, samples, keys)
        else:
            _write_tar(tmp, image_format, samples, keys)
        if not keys:
            raise _Empty
    try:
        atomic_write(path, write, suffix=SHARD_SUFFIXES[kind])
    except _Empty:
        return 0
    if kind == "webdataset":
        body = json.dumps({"shard": Path(path).name, "size": os.stat(path).st_size, "format": image_format,
                           "keys": keys}).encode()
        try:
            atomic_write(index_path(path), lambda tmp: Path(tmp).write_bytes(body), suffix=".json")
        except OSError:   # an index of an earlier write of this shard must not stand for this one
            index_path(path).unlink(missing_ok=True)
    return len(keys)


def _write_tar(tmp: str, image_format: str, samples: Iterable[Sample], keys: list[str]) -> None:
    now = int(time.time())
    # PAX: long and non-ASCII names (keys are paths) stored whole; every tar reader takes it
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for s in samples:
            for name, data in ((f"{s.key}.{image_format}", s.data),
                               (f"{s.key}.json", json.dumps(s.meta(), ensure_ascii=False).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), now, 0o644
                tar.addfile(info, io.BytesIO(data))
            keys.append(s.key)


def parquet_schema(image_format: str):
    import pyarrow as pa
    return pa.schema([("key", pa.string()), ("content", pa.string()), ("style", pa.string()),
                      ("output", pa.string()), ("image", pa.binary()), ("width", pa.int32()),
                      ("height", pa.int32())], metadata={"image_format": image_format})


def _write_parquet(tmp: str, image_format: str, samples: Iterable[Sample], keys: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    schema = parquet_schema(image_format)
    # the images are compressed already: compressing them again costs time for nothing
    compression = {name: "NONE" if name == "image" else "SNAPPY" for name in schema.names}
    rows: list[Sample] = []

    def flush(writer) -> None:
        columns = {name: [getattr(s, "data" if name == "image" else name) for s in rows] for name in schema.names}
        writer.write_table(pa.Table.from_pydict(columns, schema=schema))
        rows.clear()
    with pq.ParquetWriter(tmp, schema, compression=compression) as writer:
        for s in samples:
            rows.append(s)
            keys.append(s.key)
            if len(rows) == PARQUET_ROWS_PER_GROUP:
                flush(writer)
        if rows:
            flush(writer)
