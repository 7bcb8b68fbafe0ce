"""On-site preprocessing cache: decoded, resampled ECG windows and CMR clips stored as `.npy` files that
training opens memory-mapped, so rounds never decode WFDB or DICOM again.

An entry's key hashes the source files' bytes, the preprocessing settings and `PREPROCESS_VERSION`;
changing a file or a setting therefore misses only the entries it affects. File digests are memoised by
(size, mtime_ns) so an unchanged site is not re-read to find its keys. Failures are cached too, so a
known-bad record is reported without being decoded again. Writes are atomic (temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from shared_models.atomic_files import atomic_write, atomic_write_bytes
from protocol.jsonable import finite_or_null

# Bump when ingest code changes what it produces for the same file and settings.
PREPROCESS_VERSION = 2  # 2: per-window ECG quality, samples per frame, cine checks


class CachedFailure(Exception):
    """The record failed preprocessing before (same bytes, same settings); the message is that reason."""


class PreprocessCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.entries = self.root / "entries"
        self.entries.mkdir(parents=True, exist_ok=True)
        self._digest_file = self.root / "file_digests.json"
        self._digests: dict[str, list] = self._load_digests()
        self._digests_dirty = False

    # keys ---------------------------------------------------------------------------------------
    def key(self, modality: str, files: list[Path], settings) -> str:
        """Content- and settings-addressed key for the entry made from `files` with `settings`."""
        h = hashlib.sha256()
        h.update(f"{modality}:v{PREPROCESS_VERSION}:".encode())
        h.update(json.dumps(asdict(settings), sort_keys=True, default=str).encode())
        for file in sorted(files):
            h.update(self.file_digest(file).encode())
        return h.hexdigest()

    def file_digest(self, file: Path) -> str:
        stat = file.stat()
        name = str(file.resolve())
        memo = self._digests.get(name)
        if memo and memo[0] == stat.st_size and memo[1] == stat.st_mtime_ns:
            return memo[2]
        h = hashlib.sha256()
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        self._digests[name] = [stat.st_size, stat.st_mtime_ns, digest]
        self._digests_dirty = True
        return digest

    def flush(self) -> None:
        """Persist the digest memo (call once after a pass over the site)."""
        if self._digests_dirty:
            atomic_write_bytes(self._digest_file, json.dumps(self._digests).encode())
            self._digests_dirty = False

    # entries ------------------------------------------------------------------------------------
    def get(self, key: str) -> tuple[np.ndarray, dict] | None:
        """(memory-mapped array, metadata) of a stored entry, None on a miss; raises CachedFailure."""
        meta_path = self._path(key, ".json")
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if "error" in meta:
                raise CachedFailure(meta["error"])
            return self.load_array(key), meta
        except (OSError, ValueError, EOFError):  # an entry a power cut left torn (writes skip fsync): decode again
            return None

    def load_array(self, key: str) -> np.ndarray:
        return np.load(self._path(key, ".npy"), mmap_mode="r")

    def put(self, key: str, array: np.ndarray, meta: dict) -> None:
        # The array lands before its metadata: a metadata file means a complete entry (after a process crash;
        # after a power cut `get` finds a torn entry unreadable and decodes again, so no fsync per record).
        atomic_write(self._path(key, ".npy"), lambda handle: np.save(handle, np.ascontiguousarray(array)), durable=False)
        atomic_write_bytes(self._path(key, ".json"), json.dumps(finite_or_null(meta)).encode(), durable=False)

    def put_failure(self, key: str, reason: str) -> None:
        atomic_write_bytes(self._path(key, ".json"), json.dumps({"error": reason}).encode(), durable=False)

    def _path(self, key: str, suffix: str) -> Path:
        return self.entries / key[:2] / f"{key}{suffix}"

    def _load_digests(self) -> dict:
        try:
            return json.loads(self._digest_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
