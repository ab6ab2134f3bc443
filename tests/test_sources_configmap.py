"""ConfigMapSource against the real ``kubernetes`` client: kmock 0.8 for list/watch/410, and a small
aiohttp fake (tests/support/fakeapi.py) for what kmock cannot express (timeouts honoured, bookmarks,
dropped connections, slow answers, 403)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import kmock as kmock_lib

from tests.support.fakeapi import FakeConfigMapAPI, core_api
from tests.support.recorders import RecordingObserver, RecordingSink
from tests.support.waiting import eventually, wait_for
from webhook.cluster.backoff import Backoff
from webhook.plugins.sources.configmap import ConfigMapSource

NS, NAME = "tagger", "workload-tagger-plugins"
FAST = Backoff(initial_s=0.05, max_s=0.2, jitter=0.0)
HELLO = 'function GetWorkloadTypeAndName(m) return "Deployment", "hello" end'
BYE = 'function GetWorkloadTypeAndName(m) return "", "" end'
GONE_EVENT = {
    "type": "ERROR",
    "object": {"kind": "Status", "apiVersion": "v1", "code": 410, "reason": "Expired", "message": "too old"},
}


def make_source(api: Any, sink: RecordingSink, observer: RecordingObserver, **kw: Any) -> ConfigMapSource:
    kw.setdefault("backoff", FAST)
    kw.setdefault("watch_timeout_s", 1)
    kw.setdefault("request_timeout_s", 1.0)
    return ConfigMapSource(api, NS, NAME, sink, observer=observer, **kw)


def configmap(data: dict[str, str], rv: str, name: str = NAME) -> dict[str, Any]:
    # kmock gives objects no resourceVersion/uid: seed them, as a real API server would.
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NS, "resourceVersion": rv, "uid": f"uid-{name}"},
        "data": data,
    }


def source_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("plugins-configmap-")]


async def kmock_setup(kmock: kmock_lib.KubernetesEmulator) -> Any:
    kmock.resources["v1/configmaps"] = {}  # an undeclared, empty resource would list as 404
    return core_api(str(kmock.url))


async def create(api: Any, body: dict[str, Any]) -> None:
    await asyncio.to_thread(api.create_namespaced_config_map, NS, body, _request_timeout=2)


async def patch(api: Any, data: dict[str, str | None], rv: str) -> None:
    body = {"metadata": {"resourceVersion": rv}, "data": data}
    await asyncio.to_thread(api.patch_namespaced_config_map, NAME, NS, body, _request_timeout=2)


async def test_initial_list_takes_lua_keys_only(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = await kmock_setup(kmock)
    data = {"hello.lua": HELLO, "bye.lua": BYE, "README.md": "# notes", "settings.yaml": "a: 1", ".lua": "x"}
    await create(api, configmap(data, "7"))
    await create(api, configmap({"other.lua": BYE}, "8", name="someone-elses"))
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(api, sink, observer)
    assert not source.synced()
    source.start()
    try:
        await eventually(source.synced, what="first sync")
        assert sink.snapshots[0] == {"hello": HELLO, "bye": BYE}
        assert ("configmap", True) in observer.syncs
    finally:
        await asyncio.to_thread(source.stop)
    assert source_threads() == []


async def test_added_modified_deleted_events_keep_last_set(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = await kmock_setup(kmock)
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(api, sink, observer)
    source.start()
    try:
        await eventually(source.synced, what="first sync")
        assert sink.snapshots == [{}]  # no ConfigMap yet: a complete, empty set
        await create(api, configmap({"hello.lua": HELLO}, "10"))
        await eventually(lambda: sink.last == {"hello": HELLO}, what="ADDED applied")
        await patch(api, {"hello.lua": BYE, "bye.lua": BYE}, "11")
        await eventually(lambda: sink.last == {"hello": BYE, "bye": BYE}, what="MODIFIED applied")
        await patch(api, {"hello.lua": None}, "12")
        await eventually(lambda: sink.last == {"bye": BYE}, what="key removal applied")
        before = len(sink.applied)
        await asyncio.to_thread(api.delete_namespaced_config_map, NAME, NS, _request_timeout=2)
        await eventually(lambda: len(kmock[kmock_lib.action.DELETE]) == 1, what="delete served")
        # Give the DELETED event time to arrive; nothing may be applied for it.
        await asyncio.sleep(0.3)
        assert len(sink.applied) == before
        await create(api, configmap({"again.lua": HELLO}, "14"))
        await eventually(lambda: sink.last == {"again": HELLO}, what="re-created ConfigMap applied")
    finally:
        await asyncio.to_thread(source.stop)
    assert sink.snapshots == [
        {},
        {"hello": HELLO},
        {"hello": BYE, "bye": BYE},
        {"bye": BYE},
        {"again": HELLO},
    ]


async def test_deletion_clears_when_configured(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = await kmock_setup(kmock)
    await create(api, configmap({"hello.lua": HELLO}, "3"))
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(api, sink, observer, clear_on_delete=True)
    source.start()
    try:
        await eventually(lambda: sink.last == {"hello": HELLO}, what="initial set")
        await asyncio.to_thread(api.delete_namespaced_config_map, NAME, NS, _request_timeout=2)
        await eventually(lambda: sink.last == {}, what="cleared on delete")
    finally:
        await asyncio.to_thread(source.stop)


async def test_410_gone_mid_stream_lists_afresh(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = await kmock_setup(kmock)
    gone = {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "code": 410,
            "reason": "Expired",
            "message": "too old",
        },
    }
    # The first watch stays quiet for a while, then expires; later watches are kmock's own.
    kmock["watch", kmock_lib.resource("v1/configmaps")][:1] << (lambda: asyncio.sleep(0.6), gone)
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(api, sink, observer)
    source.start()
    try:
        await eventually(source.synced, what="first sync")
        # Created while the first watch is not delivering: only a fresh list can find it.
        await create(api, configmap({"hello.lua": HELLO}, "20"))
        await eventually(lambda: sink.last == {"hello": HELLO}, what="change seen after the relist")
        assert ("configmap", "gone") in observer.restarts
        assert len(kmock[kmock_lib.action.LIST]) == 2
        # And the watch after the relist is live again.
        await patch(api, {"bye.lua": BYE}, "21")
        await eventually(lambda: sink.last == {"hello": HELLO, "bye": BYE}, what="event after the relist")
    finally:
        await asyncio.to_thread(source.stop)


async def test_watch_that_always_expires_backs_off(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = await kmock_setup(kmock)
    kmock["watch", kmock_lib.resource("v1/configmaps")] << (GONE_EVENT,)
    sink, observer = RecordingSink(), RecordingObserver()
    source = make_source(api, sink, observer)  # back-off 0.05 s doubling to 0.2 s
    source.start()
    try:
        await asyncio.sleep(1.0)
    finally:
        await asyncio.to_thread(source.stop)
    lists = len(kmock[kmock_lib.action.LIST])
    # Without back-off this loop would list hundreds of times a second; with it, about 8 times.
    assert 3 <= lists <= 15
    assert observer.restarts == [("configmap", "gone")] * len(observer.restarts)
    assert sink.snapshots == [{}]


async def test_stop_interrupts_a_quiet_watch_promptly(kmock: kmock_lib.KubernetesEmulator) -> None:
    api = await kmock_setup(kmock)
    sink, observer = RecordingSink(), RecordingObserver()
    # kmock ignores timeoutSeconds: a watch would hang for the whole read timeout without stop().
    source = make_source(api, sink, observer, watch_timeout_s=30, request_timeout_s=30.0)
    source.start()
    await eventually(source.synced, what="first sync")
    await eventually(lambda: len(kmock[kmock_lib.action.WATCH]) == 1, what="watch open")
    started = time.monotonic()
    await asyncio.to_thread(source.stop)
    assert source_threads() == []
    assert time.monotonic() - started < 5  # far below the 30 s read timeout


def test_watch_timeout_is_renewed_from_the_bookmark() -> None:
    with FakeConfigMapAPI() as fake:
        fake.put(NS, NAME, {"hello.lua": HELLO})
        sink, observer = RecordingSink(), RecordingObserver()
        source = make_source(core_api(fake.url), sink, observer, watch_timeout_s=1, request_timeout_s=2.0)
        source.start()
        try:
            wait_for(lambda: sink.last == {"hello": HELLO}, what="initial set")
            fake.put(NS, "unrelated", {"x.lua": BYE})  # moves the resourceVersion on; not ours
            watches = lambda: [s for s in fake.seen if s.query.get("watch") == "true"]  # noqa: E731
            wait_for(lambda: len(watches()) >= 2, timeout=4, what="renewed watch")
            first, second = watches()[0], watches()[1]
            assert first.query["timeoutSeconds"] == "1" and first.query["allowWatchBookmarks"] == "true"
            assert int(second.query["resourceVersion"]) == fake.rv  # from the BOOKMARK, not the list
            fake.put(NS, NAME, {"hello.lua": BYE})
            wait_for(lambda: sink.last == {"hello": BYE}, what="event on the renewed watch")
        finally:
            source.stop()
        assert observer.restarts == []  # a renewal is not a restart
        assert len([s for s in fake.seen if s.method == "GET" and "watch" not in s.query]) == 1


def test_dropped_connection_resumes_the_watch() -> None:
    with FakeConfigMapAPI() as fake:
        fake.put(NS, NAME, {"hello.lua": HELLO})
        fake.drop_watch_after_events = 1
        sink, observer = RecordingSink(), RecordingObserver()
        source = make_source(core_api(fake.url), sink, observer, watch_timeout_s=5, request_timeout_s=2.0)
        source.start()
        try:
            wait_for(source.synced, what="first sync")
            fake.put(NS, NAME, {"hello.lua": HELLO, "bye.lua": BYE})  # delivered, then the line drops
            wait_for(lambda: ("configmap", "disconnected") in observer.restarts, what="drop noticed")
            fake.put(NS, NAME, {"bye.lua": BYE})
            wait_for(lambda: sink.last == {"bye": BYE}, what="event after reconnect")
        finally:
            source.stop()
        watches = [s for s in fake.seen if s.query.get("watch") == "true"]
        assert len(watches) >= 2
        assert int(watches[1].query["resourceVersion"]) == int(watches[0].query["resourceVersion"]) + 1
        assert len([s for s in fake.seen if s.method == "GET" and "watch" not in s.query]) == 1  # no relist
        assert sink.snapshots == [{"hello": HELLO}, {"hello": HELLO, "bye": BYE}, {"bye": BYE}]


def test_slow_api_backs_off_and_stop_does_not_hang() -> None:
    with FakeConfigMapAPI(list_delay_s=3.0) as fake:
        fake.put(NS, NAME, {"hello.lua": HELLO})
        sink, observer = RecordingSink(), RecordingObserver()
        source = make_source(core_api(fake.url), sink, observer, request_timeout_s=0.3)
        source.start()
        try:
            wait_for(lambda: len(observer.syncs) >= 2, what="two failed lists")
            assert not source.synced()
            assert sink.applied == []
            assert set(observer.syncs) == {("configmap", False)}
            fake.list_delay_s = 0.0
            wait_for(source.synced, what="sync once the API is fast again")
            assert sink.last == {"hello": HELLO}
        finally:
            started = time.monotonic()
            source.stop()
            assert time.monotonic() - started < 3
        assert source_threads() == []


def test_forbidden_list_is_retried_not_fatal() -> None:
    with FakeConfigMapAPI(forbid={"list"}) as fake:
        fake.put(NS, NAME, {"hello.lua": HELLO})
        sink, observer = RecordingSink(), RecordingObserver()
        source = make_source(core_api(fake.url), sink, observer)
        source.start()
        try:
            wait_for(lambda: len(observer.restarts) >= 2, what="repeated 403s")
            assert not source.synced()
            fake.forbid.clear()  # RBAC fixed
            wait_for(source.synced, what="sync after RBAC fixed")
            assert sink.last == {"hello": HELLO}
        finally:
            source.stop()


def test_stop_right_after_sync_does_not_wait_for_the_read_timeout() -> None:
    """stop() may come while the watch request is still being sent, before it has a socket to cut."""
    with FakeConfigMapAPI() as fake:
        fake.put(NS, NAME, {"hello.lua": HELLO})
        for _ in range(3):
            api = core_api(fake.url)
            source = make_source(
                api, RecordingSink(), RecordingObserver(), watch_timeout_s=30, request_timeout_s=30.0
            )
            source.start()
            wait_for(source.synced, what="first sync")
            started = time.monotonic()
            source.stop()
            assert source_threads() == []
            assert time.monotonic() - started < 5  # far below the 30 s bounds
