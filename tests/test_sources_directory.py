"""DirectorySource with real files and the real watchfiles watcher."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.support.recorders import RecordingObserver, RecordingSink
from tests.support.waiting import wait_for
from webhook.plugins.sources.directory import DirectorySource
from webhook.plugins.sources.snapshot import read_plugin_dir

HELLO = 'function GetWorkloadTypeAndName(m) return "Deployment", "hello" end'
BYE = 'function GetWorkloadTypeAndName(m) return "", "" end'


def make_source(path: Path, sink: RecordingSink, observer: RecordingObserver) -> DirectorySource:
    return DirectorySource(path, sink, observer=observer, debounce_ms=50, rescan_ms=300)


def directory_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "plugins-directory"]


def test_read_plugin_dir_takes_lua_files_only(tmp_path: Path) -> None:
    (tmp_path / "hello.lua").write_text(HELLO)
    (tmp_path / "notes.txt").write_text("not a plugin")
    (tmp_path / ".hidden.lua").write_text(BYE)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.lua").write_text(BYE)
    (tmp_path / "dir.lua").mkdir()  # a directory with a plugin's name is not a plugin
    (tmp_path / "b.lua").write_text(BYE)
    assert read_plugin_dir(tmp_path) == {"b": BYE, "hello": HELLO}
    assert list(read_plugin_dir(tmp_path)) == ["b", "hello"]


def test_unreadable_file_keeps_its_previous_version(tmp_path: Path) -> None:
    (tmp_path / "hello.lua").write_bytes(b"\xff\xfe not utf-8")
    assert read_plugin_dir(tmp_path) == {}
    assert read_plugin_dir(tmp_path, previous={"hello": HELLO}) == {"hello": HELLO}
    # Offline commands read strictly: an unreadable plugin is an error, not a silent gap.
    with pytest.raises(UnicodeDecodeError):
        read_plugin_dir(tmp_path, previous={"hello": HELLO}, strict=True)


def test_create_modify_delete_files(tmp_path: Path) -> None:
    (tmp_path / "hello.lua").write_text(HELLO)
    (tmp_path / "README.md").write_text("# plugins")
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(tmp_path, sink, observer)
    assert not source.synced()
    source.start()
    try:
        wait_for(source.synced, what="initial load")
        assert sink.snapshots == [{"hello": HELLO}]
        (tmp_path / "bye.lua").write_text(BYE)
        wait_for(lambda: sink.last == {"hello": HELLO, "bye": BYE}, what="created file")
        (tmp_path / "hello.lua").write_text(BYE)
        wait_for(lambda: sink.last == {"hello": BYE, "bye": BYE}, what="modified file")
        (tmp_path / "bye.lua").unlink()
        wait_for(lambda: sink.last == {"hello": BYE}, what="deleted file")
        (tmp_path / "other.txt").write_text("ignored")
    finally:
        source.stop()
    assert directory_threads() == []
    assert sink.snapshots == [
        {"hello": HELLO},
        {"hello": HELLO, "bye": BYE},
        {"hello": BYE, "bye": BYE},
        {"hello": BYE},
    ]
    assert all(origin.startswith(f"directory {tmp_path}") for _, origin in sink.applied)
    assert observer.restarts == []


def test_missing_directory_syncs_empty_then_loads_when_it_appears(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(plugins, sink, observer)
    source.start()
    try:
        wait_for(source.synced, what="sync on a missing directory")
        assert sink.snapshots == [{}]
        plugins.mkdir()
        (plugins / "hello.lua").write_text(HELLO)
        wait_for(lambda: sink.last == {"hello": HELLO}, what="directory appeared")
    finally:
        source.stop()


def test_removed_directory_keeps_the_last_set(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "hello.lua").write_text(HELLO)
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(plugins, sink, observer)
    source.start()
    try:
        wait_for(lambda: sink.last == {"hello": HELLO}, what="initial load")
        shutil.rmtree(plugins)  # like a deleted ConfigMap: keep what we have
        time.sleep(0.7)  # more than two rescan periods
        assert sink.snapshots == [{"hello": HELLO}]
        plugins.mkdir()
        (plugins / "bye.lua").write_text(BYE)
        wait_for(lambda: sink.last == {"bye": BYE}, what="directory back")
    finally:
        source.stop()
    assert sink.snapshots == [{"hello": HELLO}, {"bye": BYE}]


def test_mounted_configmap_swap_through_data_symlink(tmp_path: Path) -> None:
    """The kubelet updates a mounted ConfigMap by swapping the ``..data`` symlink atomically."""
    first = tmp_path / "..2026_01"
    first.mkdir()
    (first / "hello.lua").write_text(HELLO)
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "hello.lua").symlink_to("..data/hello.lua")
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(tmp_path, sink, observer)
    source.start()
    try:
        wait_for(lambda: sink.last == {"hello": HELLO}, what="initial load through symlinks")
        second = tmp_path / "..2026_02"
        second.mkdir()
        (second / "hello.lua").write_text(BYE)
        (tmp_path / "..data_tmp").symlink_to(second.name)
        (tmp_path / "..data_tmp").rename(tmp_path / "..data")
        shutil.rmtree(first)
        wait_for(lambda: sink.last == {"hello": BYE}, what="swapped content")
    finally:
        source.stop()
    assert sink.snapshots == [{"hello": HELLO}, {"hello": BYE}]


def test_unreadable_file_is_logged_once_per_version_not_every_rescan(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "hello.lua"
    bad.write_bytes(b"\xff\xfe not utf-8")
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(tmp_path, sink, observer)  # rescans every 0.3 s

    def reports() -> int:
        return sum("cannot read plugin file" in r.getMessage() for r in caplog.records)

    with caplog.at_level("ERROR", logger="workload_tagger.sources"):
        source.start()
        try:
            wait_for(source.synced, what="initial load")
            time.sleep(1.5)  # several rescans
            assert reports() == 1
            bad.write_bytes(b"\xff\xfe still not utf-8, a new version")
            wait_for(lambda: reports() == 2, what="the new version reported")
            time.sleep(1.0)
            assert reports() == 2
            bad.write_text(HELLO)  # readable again...
            wait_for(lambda: sink.last == {"hello": HELLO}, what="fixed file")
            bad.write_bytes(b"\xff broken again")  # ...so its next failure is news
            wait_for(lambda: reports() == 3, what="the next failure reported")
        finally:
            source.stop()
