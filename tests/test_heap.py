"""Preparing the heap for serving, in a child interpreter (freezing pytest's own heap would
keep every test's garbage forever): what was alive is frozen, what was garbage is freed
first, the young generation's threshold is raised, and what comes after is still collected,
by hand and by the collector on its own."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, weakref
from dispatcher.heap import YOUNG_THRESHOLD, prepare_heap_for_serving

class Node:
    pass

def cycle():
    node = Node()
    node.me = node  # only the cyclic collector can free it
    return node

alive = cycle()
garbage = cycle()
garbage_ref = weakref.ref(garbage)
del garbage
_, *older = gc.get_threshold()
gc.disable()  # no automatic collection may free the garbage before the call does

frozen = prepare_heap_for_serving()
assert frozen > 1000, frozen
assert garbage_ref() is None, "garbage from start-up must be freed, not frozen"
assert not any(o is alive for o in gc.get_objects()), "live objects leave the generations"
assert gc.get_threshold() == (YOUNG_THRESHOLD, *older), gc.get_threshold()

later = cycle()
later_ref = weakref.ref(later)
del later
gc.collect()
assert later_ref() is None, "cycles made after the freeze are collected as usual"

gc.enable()
refs = []
for _ in range(3 * YOUNG_THRESHOLD):  # more cycles than the threshold: a collection is due
    refs.append(weakref.ref(cycle()))
assert any(ref() is None for ref in refs), "the collector still runs on its own"

gc.set_threshold(YOUNG_THRESHOLD * 2, *older)
prepare_heap_for_serving()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD * 2, "a higher threshold is kept"
print("ok")
"""


def test_the_heap_is_frozen_its_young_threshold_raised_and_later_garbage_collected() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "ok"
