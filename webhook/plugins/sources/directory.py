"""Plugins from a directory of ``*.lua`` files (``make run``, development, non-cluster use).

The whole directory is re-read on every change and on every quiet ``rescan_ms`` period, so a
change made between the first read and the start of the watch is never lost, and a mounted
ConfigMap (whose files are swapped through a ``..data`` symlink) works too. A file that cannot
be read keeps its previous content in the snapshot: the sink then keeps its last good version.
"""

from __future__ import annotations

import logging
from pathlib import Path

import watchfiles

from webhook.plugins.sources import PluginSink, SourceObserver, ThreadedSource
from webhook.plugins.sources.snapshot import read_plugin_dir

log = logging.getLogger("workload_tagger.sources.directory")

SOURCE = "directory"


class DirectorySource(ThreadedSource):
    """Feeds ``sink`` from a directory; see :class:`webhook.plugins.sources.PluginSource`."""

    def __init__(
        self,
        path: str | Path,
        sink: PluginSink,
        observer: SourceObserver | None = None,
        debounce_ms: int = 200,
        rescan_ms: int = 2000,
    ) -> None:
        super().__init__(sink, observer)
        self._path = Path(path)
        self._debounce_ms = debounce_ms
        self._rescan_ms = rescan_ms
        self._missing_logged = False
        self._unreadable: dict[str, object] = {}  # files that could not be read, as last reported

    def stop(self) -> None:
        self._stopping.set()  # also watchfiles' stop_event: it returns within one step
        if self._thread is not None:
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stopping.is_set():
            if not self._path.is_dir():
                self._missing()
                self._stopping.wait(self._rescan_ms / 1000)
                continue
            self._missing_logged = False
            try:
                self._scan("initial" if self._last is None else "rescan")
                for _changes in watchfiles.watch(
                    self._path,
                    watch_filter=None,
                    debounce=self._debounce_ms,
                    step=50,
                    stop_event=self._stopping,
                    rust_timeout=self._rescan_ms,
                    yield_on_timeout=True,
                    recursive=False,
                    raise_interrupt=False,
                ):
                    if not self._path.is_dir():
                        break
                    self._scan("change")
            except Exception as exc:  # a source thread must not die; retry after a pause
                if self._stopping.is_set():
                    break
                self._observer.watch_restarted(SOURCE, "error")
                log.warning(
                    "plugin directory watch failed; retrying",
                    extra={"dir": str(self._path), "error": str(exc)},
                )
                self._stopping.wait(self._rescan_ms / 1000)

    def _missing(self) -> None:
        if self._missing_logged:
            return
        self._missing_logged = True
        if self._last is None:
            log.warning("plugin directory does not exist (yet); no plugins", extra={"dir": str(self._path)})
            self._apply({}, "absent")
        elif self._last:
            log.warning(
                "plugin directory disappeared; keeping the last good plugin set",
                extra={"dir": str(self._path)},
            )

    def _scan(self, why: str) -> None:
        self._apply(read_plugin_dir(self._path, self._last, unreadable=self._unreadable), why)

    def _apply(self, snapshot: dict[str, str], why: str) -> None:
        if self._hand_over(snapshot, f"directory {self._path} ({why})", dir=str(self._path)):
            self._observer.synced(SOURCE, True)
        self._synced.set()
