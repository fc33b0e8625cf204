"""Keep the cyclic garbage collector off what start-up built, and off each call in flight.

A started dispatcher holds ~120,000 objects that live as long as the process: modules,
gRPC, SQLAlchemy metadata, pydantic models, the config. Every full (generation 2)
collection walked all of them: 65-75 ms each on a 2-core machine, about once in ten
seconds under load, and every call in flight waited it out. Frozen once the process is up
(``gc.freeze``: the permanent generation, which no later collection scans), they are never
walked again; a full collection then takes about 1 ms (both measured in ``bench.route``
with a temporary ``gc.callbacks`` timer).

The young generation's threshold is then raised to 2,000: CPython 3.13's own default,
so from 3.13 on this changes nothing, while 3.11 and 3.12 start at 700. A generation-0
collection runs when tracked allocations outnumber deallocations by the threshold, and
64 Routes in flight keep several hundred young objects alive that reference counting
frees a moment later, so at 700 collections kept finding objects about to die anyway.
Measured in ``bench.route_handlers`` (64 callers, ~31,000 Route + Release pairs, a
temporary ``gc.callbacks`` timer): 849 young collections at 700, one per ~37 pairs, 0.22-0.27
ms each, 7-9 us of a pair's 130-145 us; at 2,000, 22 collections, 0.2-0.4 us per pair. The
price is a longer pause when one does run: 0.55 ms on average and 2.4 ms at most, against
0.2-0.6 ms. Cycles are still collected; they are looked for less often.
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
