"""The demo's over-admission check: tokens each pool admitted against what it could admit.

A token bucket (the demo's pools: safety factor 1, a 60 s burst) holds at most its limit and
refills at limit / 60 per second, so over any span starting at ``t0`` a pool can admit at
most the room it had at ``t0`` plus the refill since, plus what settles gave back. Each
pool's run is cut at every limit change (the room then is what SetLimits answered), and
``ratio`` is the largest admitted ÷ allowed over those spans: above 1.0 the ledger admitted
more than the pool held. Admission times are the server's (lease expiry - lease); span
starts are taken after the change answered, so timing can only understate the ratio.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Span:
    start: float
    room: float  # tokens the pool could admit at ``start``
    refill_per_s: float
    admitted: float = 0.0
    refunded: float = 0.0

    def ratio(self, end: float) -> float:
        allowed = self.room + self.refill_per_s * max(0.0, end - self.start)
        return (self.admitted - self.refunded) / allowed if allowed > 0 else 0.0


@dataclass
class QuotaCheck:
    spans: dict[str, list[Span]] = field(default_factory=dict)

    def start(self, pool_id: str, at: float, limit_tpm: float) -> None:
        self.spans[pool_id] = [Span(at, limit_tpm, limit_tpm / 60.0)]

    def limit_changed(self, pool_id: str, at: float, room: float, limit_tpm: float) -> None:
        self.spans.setdefault(pool_id, []).append(Span(at, max(0.0, room), limit_tpm / 60.0))

    def _span(self, pool_id: str, at: float) -> Span | None:
        found = [s for s in self.spans.get(pool_id, ()) if s.start <= at]
        return found[-1] if found else None

    def admit(self, pool_id: str, at: float, tokens: float) -> None:
        span = self._span(pool_id, at)
        if span is not None:
            span.admitted += tokens

    def refund(self, pool_id: str, at: float, tokens: float) -> None:
        span = self._span(pool_id, at)
        if span is not None:
            span.refunded += tokens

    def ratio(self, end: float) -> float:
        """The largest admitted ÷ allowed over every pool's spans up to ``end``."""
        ratios = []
        for spans in self.spans.values():
            for span, following in zip(spans, [*spans[1:], None], strict=True):
                ratios.append(span.ratio(following.start if following else end))
        return max(ratios, default=0.0)
