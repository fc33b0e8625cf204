"""Keep the cyclic garbage collector off what start-up built, and off each call in flight.

A started dispatcher holds ~120,000 objects that live as long as the process: modules,
gRPC, SQLAlchemy metadata, pydantic models, the config. Every full (generation 2)
collection walked all of them: 65-75 ms each on a 2-core machine, about once in ten
seconds under load, and every call in flight waited it out. Frozen once the process is up
(``gc.freeze``: the permanent generation, which no later collection scans), they are never
walked again; a full collection then takes about 1 ms (both measured in ``bench.route``
with a temporary ``gc.callbacks`` timer).

The young generation's threshold is then raised from CPython's 700 to 2,000 (3.13's own
default). A generation-0 collection runs when tracked allocations outnumber deallocations
by the threshold, and 64 Routes in flight keep about 700-2,000 young objects alive that
reference counting frees a moment later: at 700 nearly every Route + Release pair started
a collection of objects that were about to die anyway (849 collections, 7-9 us of a pair's
~140 us in ``bench.route_handlers``), at 2,000 a collection is rare (22 in the same run,
0.2 us per pair) and still short (0.5 ms on average, 2.4 ms at most, against 0.2-0.6 ms).
Cycles are still collected; they are just looked for less often.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 2_000


def prepare_heap_for_serving() -> int:
    """Collect start-up's garbage, move every surviving object to the permanent generation
    and raise the young generation's threshold to ``YOUNG_THRESHOLD`` (never lower it).
    Returns how many objects were frozen. Call once, when the process is serving."""
    gc.collect()  # garbage frozen now would never be freed
    gc.freeze()
    young, *older = gc.get_threshold()
    gc.set_threshold(max(young, YOUNG_THRESHOLD), *older)
    return gc.get_freeze_count()
