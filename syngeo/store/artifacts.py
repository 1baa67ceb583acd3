"""Artifact storage: uploaded files and result arrays.

Two stores with one interface: a local folder (the embedded default) and the database
itself (chunked rows), which any worker that can reach the database can read — the
production choice when workers run on other machines.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Protocol

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from syngeo.store.models import ArtifactChunk

CHUNK_BYTES = 8 << 20  # rows of 8 MiB keep memory flat for any upload size


class ArtifactStore(Protocol):
    def put_file(self, session: Session, key: str, path: Path) -> None:
        """Store a file. The database store writes within ``session``'s transaction."""

    def fetch(self, session: Session, key: str, dest: Path) -> Path:
        """Copy the artifact to ``dest`` and return it."""

    def delete(self, session: Session, key: str) -> None: ...


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"artifact key escapes the store: {key!r}")
        return path

    def put_file(self, session: Session, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial")
        shutil.copyfile(path, partial)
        os.replace(partial, target)  # readers never see half a file

    def fetch(self, session: Session, key: str, dest: Path) -> Path:
        source = self._path(key)
        if not source.exists():
            raise FileNotFoundError(f"artifact {key!r} is missing from {self.root}")
        shutil.copyfile(source, dest)
        return dest

    def delete(self, session: Session, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class DatabaseArtifactStore:
    def put_file(self, session: Session, key: str, path: Path) -> None:
        session.execute(delete(ArtifactChunk).where(ArtifactChunk.key == key))
        with open(path, "rb") as fh:
            seq = 0
            while chunk := fh.read(CHUNK_BYTES):
                row = ArtifactChunk(key=key, seq=seq, data=chunk)
                session.add(row)
                session.flush()  # send each chunk now so only one is held in memory
                session.expunge(row)
                seq += 1

    def fetch(self, session: Session, key: str, dest: Path) -> Path:
        seqs = session.scalars(select(ArtifactChunk.seq).where(ArtifactChunk.key == key)
                               .order_by(ArtifactChunk.seq)).all()
        if not seqs:
            raise FileNotFoundError(f"artifact {key!r} is missing from the database")
        with open(dest, "wb") as fh:
            for seq in seqs:
                fh.write(session.scalar(select(ArtifactChunk.data).where(
                    ArtifactChunk.key == key, ArtifactChunk.seq == seq)))
        return dest

    def delete(self, session: Session, key: str) -> None:
        session.execute(delete(ArtifactChunk).where(ArtifactChunk.key == key))


def artifact_store(location: str) -> ArtifactStore:
    """``'database'`` or a folder path (see ``Settings.artifact_location``)."""
    if location == "database":
        return DatabaseArtifactStore()
    return LocalArtifactStore(Path(location))


def save_arrays(session: Session, store: ArtifactStore, key: str,
                arrays: dict[str, np.ndarray], tmp_dir: Path) -> None:
    path = Path(tmp_dir) / "arrays.npz"
    np.savez_compressed(path, **arrays)
    store.put_file(session, key, path)


def load_arrays(session: Session, store: ArtifactStore, key: str,
                tmp_dir: Path) -> dict[str, np.ndarray]:
    path = store.fetch(session, key, Path(tmp_dir) / "arrays.npz")
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}
