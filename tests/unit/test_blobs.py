"""The blob store's layout on disk, and blobs an older maild wrote in two levels of folders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from maild.store.blobs import BlobStore

PDF = b"%PDF-1.4\n" + bytes(range(256)) * 40


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_blob_is_one_file_in_one_level_of_folders(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "attachments")
    sha = store.put(PDF)
    assert sha == hashlib.sha256(PDF).hexdigest()
    assert _files(store.root) == [store.root / sha[:2] / sha]
    assert store.put(PDF) == sha and len(_files(store.root)) == 1  # the same bytes again: kept once
    assert store.get(sha) == PDF


def test_blobs_of_the_two_level_layout_are_found_and_not_written_again(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "raw")
    sha = hashlib.sha256(PDF).hexdigest()
    old = store.root / sha[:2] / sha[2:4] / sha
    old.parent.mkdir(parents=True)
    old.write_bytes(PDF)

    assert store.get(sha) == PDF
    assert store.stored_path(sha) == old
    assert store.put_file(PDF, sha) == old and _files(store.root) == [old]

    arrived = tmp_path / "spooled.eml"
    arrived.write_bytes(PDF)
    assert store.adopt(arrived, sha) == old
    assert not arrived.exists() and _files(store.root) == [old]


def test_a_missing_blob_is_file_not_found(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "raw")
    with pytest.raises(FileNotFoundError, match="no blob"):
        store.get("0" * 64)
    assert store.stored_path("0" * 64) is None
