"""The index of regions and hour blocks beside the tables: pages in name order, search, writes kept up."""

from __future__ import annotations

from solar_agents.core.wire import block_key
from solar_agents.observe.regions import RegionIndex


def test_rebuild_and_writes() -> None:
    index = RegionIndex()
    index.rebuild([block_key("b", 3), block_key("a|x", 7), block_key("b", 4)], ["a|x", "c"], built_for=5)
    assert index.names() == ["a|x", "b", "c"] and index.built_for == 5
    assert index.block_keys("b") == [block_key("b", 3), block_key("b", 4)]
    index.write("hours", block_key("d", 1), present=True)
    index.write("hours", block_key("b", 3), present=False)
    index.write("regions", "aa", present=True)
    assert index.names() == ["aa", "a|x", "b", "c", "d"]
    assert index.block_keys("b") == [block_key("b", 4)]
    assert "d" in index and "zz" not in index and len(index) == 5
    assert index.block_keys("zz") == []


def test_pages_in_name_order_with_search() -> None:
    index = RegionIndex()
    names = [f"site-{i:05d}" for i in range(10_000)]
    index.rebuild([], reversed(names), built_for=1)
    first = index.page(None, 100)
    assert first.regions == names[:100] and first.total == first.matching == 10_000
    assert first.next_after == names[99]
    second = index.page(first.next_after, 100)
    assert second.regions == names[100:200]
    last = index.page(names[-3], 100)
    assert last.regions == names[-2:] and last.next_after is None
    found = index.page(None, 5, search="SITE-0999")
    assert found.regions == [f"site-0999{i}" for i in range(5)] and found.matching == 10
    assert index.page(found.next_after, 5, search="site-0999").next_after is None
    assert index.page(None, 5, search="nowhere").regions == []
