"""Atomic writes: the old file survives any failure, and no temporary file is left behind."""

from __future__ import annotations

import os
import stat

import pytest

from spinecascade.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir())


def test_write_bytes_creates_and_replaces(tmp_path):
    target = tmp_path / "model.bin"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    atomic_write_bytes(target, b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert _siblings(target) == ["model.bin"]


def test_write_text_is_utf8_without_newline_translation(tmp_path):
    target = tmp_path / "labels.json"
    atomic_write_text(target, "L3 \u00e9\r\nT1\n")
    assert target.read_bytes() == "L3 \u00e9\r\nT1\n".encode()


def test_atomic_path_keeps_suffix_and_directory(tmp_path):
    target = tmp_path / "weights.safetensors"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path
        assert temporary.name.endswith("weights.safetensors")
        assert temporary != target
        temporary.write_bytes(b"data")
        assert not target.exists()
    assert target.read_bytes() == b"data"
    assert _siblings(target) == ["weights.safetensors"]


def test_exception_keeps_old_file_and_removes_temporary(tmp_path):
    target = tmp_path / "labels.mat"
    target.write_bytes(b"precious")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"precious"
    assert _siblings(target) == ["labels.mat"]


def test_library_deleting_its_file_is_an_error_not_data_loss(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(FileNotFoundError), atomic_path(target) as temporary:
        temporary.unlink()
    assert target.read_text() == "old"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_existing_permissions_are_kept(tmp_path):
    target = tmp_path / "shared.json"
    target.write_text("{}")
    target.chmod(0o640)
    atomic_write_text(target, "[]")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_text() == "[]"


def test_missing_directory_raises_and_leaves_nothing(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "absent" / "x.bin", b"x")
    assert list(tmp_path.iterdir()) == []
