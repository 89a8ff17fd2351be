#!/usr/bin/env python3
"""RabbitMQ quorum-queue publisher for bench/queue-vs-nats.sh (RABBITMQ=1).

Publishes persistent 256-byte messages to a quorum queue (3 replicas) with publisher
confirms: a message counts once the broker confirms it, which for a quorum queue means
written (fsynced by Ra's WAL) on a quorum. Uses aiormq (the AMQP layer under aio-pika)
directly: one coroutine per message in flight and nothing else, so the client stays cheap.
Two modes, matching loadgen's:
  --rate 0: closed loop, --inflight messages awaiting their confirm at all times;
  --rate N: open loop, N messages/s, each timed from publish to confirm.
Prints one line in loadgen's format: acked_per_sec=... ack_latency_ms p50=... p99=...
"""
import argparse
import asyncio
import time

import aiormq
from pamqp.commands import Basic

from pubstats import Run, add_load_args


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True, help="amqp:// URL of one node")
    ap.add_argument("--queue", default="bench")
    add_load_args(ap)
    ap.add_argument("--create", action="store_true", help="(re)declare the quorum queue first")
    args = ap.parse_args()

    connection = await aiormq.connect(args.url)
    channel = await connection.channel(publisher_confirms=True)
    if args.create:
        await channel.queue_delete(args.queue)
        await channel.queue_declare(
            args.queue,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 3},
        )
    persistent = Basic.Properties(delivery_mode=2)
    payload = b"\xa5" * args.size
    run = Run(args)
    slots = asyncio.Semaphore(args.inflight)
    tasks = set()

    async def publish(sent_at):
        try:
            confirm = await channel.basic_publish(
                payload, routing_key=args.queue, properties=persistent
            )
            if not isinstance(confirm, Basic.Ack):
                raise RuntimeError(f"not confirmed: {confirm}")
        except Exception:
            run.fail()
            return
        finally:
            slots.release()
        run.ok(sent_at)

    async for _ in run.sends():
        await slots.acquire()
        task = asyncio.create_task(publish(time.monotonic()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    await connection.close()
    run.report("rabbitmq")


if __name__ == "__main__":
    asyncio.run(main())
