#!/usr/bin/env python3
"""JetStream publisher for bench/queue-vs-nats.sh.

Publishes 256-byte messages to an R3 file-storage stream and waits for each PubAck (the
JetStream ACK: stored on a quorum). Two modes, matching loadgen's:
  --rate 0: closed loop, --inflight messages awaiting their ACK at all times (throughput);
  --rate N: open loop, N messages/s, each timed from publish to ACK (latency).
Prints one line in loadgen's format: acked_per_sec=... ack_latency_ms p50=... p99=...
"""
import argparse
import asyncio
import time

import nats
from nats.js.api import StorageType, StreamConfig

from pubstats import Run, add_load_args


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--servers", required=True, help="comma-separated nats:// URLs")
    ap.add_argument("--stream", default="BENCH")
    add_load_args(ap)
    ap.add_argument("--create", action="store_true", help="(re)create the R3 stream first")
    args = ap.parse_args()

    nc = await nats.connect(servers=args.servers.split(","), pending_size=64 * 1024 * 1024)
    js = nc.jetstream(timeout=30, publish_async_max_pending=args.inflight)
    subject = f"{args.stream.lower()}.data"
    if args.create:
        try:
            await js.delete_stream(args.stream)
        except Exception:
            pass
        await js.add_stream(
            StreamConfig(
                name=args.stream,
                subjects=[f"{args.stream.lower()}.>"],
                storage=StorageType.FILE,
                num_replicas=3,
            )
        )
    payload = b"\xa5" * args.size
    run = Run(args)

    # publish_async keeps up to --inflight messages awaiting their PubAck (its semaphore
    # blocks beyond that) without a coroutine per message, so the client stays cheap.
    def on_done(sent_at, fut):
        if fut.cancelled() or fut.exception() is not None:
            run.fail()
        else:
            run.ok(sent_at)

    async for _ in run.sends():
        t0 = time.monotonic()
        fut = await js.publish_async(subject, payload)
        fut.add_done_callback(lambda f, t0=t0: on_done(t0, f))
    try:
        await asyncio.wait_for(js.publish_async_completed(), timeout=60)
    except asyncio.TimeoutError:
        pass
    await nc.drain()
    run.report("nats")


if __name__ == "__main__":
    asyncio.run(main())
