import errno
import os

import pytest

from harvester import files


def test_a_kept_source_becomes_the_dataset_image_without_a_second_copy(tmp_path):
    source = tmp_path / ".sources" / "cat" / "1.jpg"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"jpeg bytes")
    files.link_atomically(source, tmp_path / "cat" / "1.jpg", b"jpeg bytes")
    assert os.path.samefile(source, tmp_path / "cat" / "1.jpg")  # one file, two names


def test_a_dataset_image_left_by_a_killed_run_is_replaced_whole(tmp_path):
    source, target = tmp_path / "source.jpg", tmp_path / "cat" / "1.jpg"
    source.write_bytes(b"new")
    target.parent.mkdir()
    target.write_bytes(b"left by a run that died before recording it")
    files.link_atomically(source, target, b"new")
    assert target.read_bytes() == b"new" and os.path.samefile(source, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["1.jpg"]  # no .part left


def test_linking_a_file_to_a_name_it_already_has_leaves_nothing_behind(tmp_path):
    source, target = tmp_path / "source.jpg", tmp_path / "cat" / "1.jpg"
    source.write_bytes(b"jpeg bytes")
    files.link_atomically(source, target, b"jpeg bytes")
    files.link_atomically(source, target, b"jpeg bytes")  # a resumed run, after a kill
    assert os.path.samefile(source, target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["1.jpg"]


@pytest.mark.parametrize("refusal", [errno.EPERM, errno.EXDEV, errno.EOPNOTSUPP])
def test_where_hard_links_are_refused_the_bytes_are_written(tmp_path, monkeypatch, refusal):
    def refuse(*args, **kwargs):
        raise OSError(refusal, os.strerror(refusal))

    monkeypatch.setattr(os, "link", refuse)  # FAT, some network drives
    source, target = tmp_path / "source.jpg", tmp_path / "cat" / "1.jpg"
    source.write_bytes(b"jpeg bytes")
    files.link_atomically(source, target, b"jpeg bytes")
    assert target.read_bytes() == b"jpeg bytes" and not os.path.samefile(source, target)


def test_a_failure_that_is_not_about_links_is_raised(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", full)
    (tmp_path / "source.jpg").write_bytes(b"x")
    with pytest.raises(OSError) as raised:
        files.link_atomically(tmp_path / "source.jpg", tmp_path / "1.jpg", b"x")
    assert raised.value.errno == errno.ENOSPC


def test_what_a_killed_writer_left_is_removed_and_nothing_else(tmp_path):
    folder = tmp_path / "cat"
    folder.mkdir()
    for name in (".1.jpg.4242-139707455362752.part", ".2.jpg.4242-1.part"):
        (folder / name).write_bytes(b"half a file")
    for name in ("1.jpg", ".hidden", "notes.part"):  # a user's files stay
        (folder / name).write_bytes(b"kept")
    assert files.remove_partial_files(folder) == 2
    assert sorted(path.name for path in folder.iterdir()) == [".hidden", "1.jpg", "notes.part"]
    assert files.remove_partial_files(tmp_path / "no such folder") == 0
