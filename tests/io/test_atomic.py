import os
import stat

import pytest

from vrpsam.io.atomic import atomic_file, atomic_path, atomic_write_bytes


def test_replaces_whole_file_with_ordinary_permissions(tmp_path):
    target = tmp_path / "sub" / "out.bin"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_leaves_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(error):
        with atomic_file(target) as handle:
            handle.write(b"half")
            raise error()
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_path_for_libraries_that_write_by_name(tmp_path):
    target = tmp_path / "model.bin"
    with atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.exists() and not target.exists()
        temporary.write_bytes(b"weights")
    assert target.read_bytes() == b"weights" and not temporary.exists()
