"""Tests for featstore.paths: media paths are normalised and never leave the dataset root."""

from __future__ import annotations

import os

import pytest

from featstore.errors import UnsafePathError
from featstore.paths import resolve, safe_relpath


@pytest.mark.parametrize(
    "rel, expected",
    [
        ("clips/a.mp4", "clips/a.mp4"),
        ("./clips//a.mp4", "clips/a.mp4"),
        ("clips\\sub\\a.mp4", "clips/sub/a.mp4"),
        ("clips/../other/a.mp4", "other/a.mp4"),
        ("a.mp4", "a.mp4"),
    ],
)
def test_safe_relpath_normalises_to_posix(tmp_path, rel, expected):
    assert safe_relpath(tmp_path, rel, "s1") == expected


@pytest.mark.parametrize(
    "rel, why",
    [
        ("/etc/passwd", "absolute"),
        ("C:\\data\\a.mp4", "absolute"),
        ("c:a.mp4", "absolute"),
        ("\\\\server\\share\\a.mp4", "absolute"),
        ("//server/share/a.mp4", "absolute"),
        ("../x.mp4", "escapes"),
        ("a/../../x.mp4", "escapes"),
        ("..\\x.mp4", "escapes"),
        ("..", "escapes"),
        ("", "empty"),
        ("   ", "empty"),
        (".", "root itself"),
        ("a\x00.mp4", "NUL"),
    ],
)
def test_safe_relpath_refuses_unsafe_paths_naming_sample_and_path(tmp_path, rel, why):
    with pytest.raises(UnsafePathError) as info:
        safe_relpath(tmp_path, rel, "clip_7")
    message = str(info.value)
    assert "'clip_7'" in message
    assert repr(rel) in message
    assert why in message


def test_safe_relpath_refuses_symlink_out_of_root(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.mp4").write_bytes(b"secret")
    os.symlink(outside, root / "link")
    os.symlink(outside / "secret.mp4", root / "direct.mp4")
    for rel in ("link/secret.mp4", "direct.mp4"):
        with pytest.raises(UnsafePathError, match="'s9'.*outside the dataset root"):
            safe_relpath(root, rel, "s9")


def test_safe_relpath_accepts_symlink_inside_root(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.mp4").write_bytes(b"x")
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert safe_relpath(tmp_path, "alias/a.mp4", "s") == "alias/a.mp4"


def test_safe_relpath_refuses_symlink_loop(tmp_path):
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    with pytest.raises(UnsafePathError, match="'s2'"):
        safe_relpath(tmp_path, "loop_a/x.mp4", "s2")


def test_safe_relpath_refuses_non_string(tmp_path):
    with pytest.raises(UnsafePathError, match="expected a string"):
        safe_relpath(tmp_path, 12, "s")


def test_resolve_joins_checked_path_and_refuses_escape(tmp_path):
    assert resolve(tmp_path, "clips\\a.mp4") == tmp_path / "clips" / "a.mp4"
    with pytest.raises(UnsafePathError, match="escapes"):
        resolve(tmp_path, "../a.mp4")
