"""Freezing the start-up heap, in a child interpreter (freezing pytest's own heap would keep
every test's garbage forever): what was alive is frozen, what was garbage is freed first,
and what comes after is collected as usual."""

from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc, weakref
from dispatcher.heap import freeze_startup_heap

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
gc.disable()  # no automatic collection may free the garbage before the call does

frozen = freeze_startup_heap()
assert frozen > 1000, frozen
assert garbage_ref() is None, "garbage from start-up must be freed, not frozen"
assert not any(o is alive for o in gc.get_objects()), "live objects leave the generations"

later = cycle()
later_ref = weakref.ref(later)
del later
gc.collect()
assert later_ref() is None, "cycles made after the freeze are collected as usual"
print("ok")
"""


def test_the_start_up_heap_is_frozen_and_later_garbage_still_collected() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "ok"
