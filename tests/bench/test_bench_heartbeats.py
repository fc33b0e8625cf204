"""The heartbeat bench, tiny: every stream held, every report acked, against both servers.

It starts the real ``dispatcher serve`` and a bare grpc.aio server as subprocesses and drives
them from a load-generator subprocess; speed is the bench's business, not this test's.
"""

from __future__ import annotations

from bench import heartbeats


async def test_every_stream_is_held_and_every_report_acked() -> None:
    args = heartbeats.parse_args(
        ["--streams", "30", "--interval", "0.5", "--seconds", "2", "--baseline-seconds", "1"]
    )
    result = await heartbeats.run(args)
    assert result["streams_held"] == result["streams_announced"] == 30
    assert result["reports_acked"] == result["reports_sent"] > 0
    assert result["reports_rejected"] == 0
    assert result["baseline_streams_held"] == 30
    assert result["baseline_reports_acked"] == result["baseline_reports_sent"] > 0
    assert heartbeats.failures(args, result) == []
