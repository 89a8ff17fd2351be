"""Shared by the publishers of bench/queue-vs-nats.sh (nats_pub.py, rabbitmq_pub.py): the
load arguments, the pacing of sends, and the one result line in loadgen's format."""
import asyncio
import time


def add_load_args(ap):
    """The load arguments: message size, messages awaiting their ACK, rate, duration."""
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--inflight", type=int, default=1024)
    ap.add_argument("--rate", type=int, default=0, help="messages/s; 0: closed loop")
    ap.add_argument("--duration", type=float, default=20)


def pct(sorted_ms, p):
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms), max(1, int(-(-len(sorted_ms) * p // 1))))
    return sorted_ms[i - 1]


class Run:
    """One phase: paces the sends and records every ACK's latency."""

    def __init__(self, args):
        self.args = args
        self.start = time.monotonic()
        self.end = self.start + args.duration
        self.sent = 0
        self.acked = 0
        self.failed = 0
        self.latencies = []

    async def sends(self):
        """Yields once per message to send, until --duration is over: at once with
        --rate 0 (the publisher's own in-flight bound paces it), else at --rate."""
        interval = 1.0 / self.args.rate if self.args.rate else 0.0
        while True:
            now = time.monotonic()
            if now >= self.end:
                return
            if self.args.rate:
                due = int((now - self.start) / interval) + 1
                if self.sent >= due:
                    await asyncio.sleep(0.0005)
                    continue
            yield
            self.sent += 1

    def ok(self, sent_at):
        """A message published at `sent_at` was ACKed now."""
        done = time.monotonic()
        if done <= self.end:
            self.acked += 1
        self.latencies.append((done - sent_at) * 1000.0)

    def fail(self):
        self.failed += 1

    def report(self, name):
        """Prints the counts, then acked_per_sec=... ack_latency_ms p50=... (loadgen's
        format, which the script parses); acked_per_sec counts ACKs within --duration."""
        lat = sorted(self.latencies)
        a = self.args
        print(f"{name} sent={self.sent} acked={len(lat)} failed={self.failed} "
              f"rate={a.rate} inflight={a.inflight}")
        print(
            f"acked_per_sec={self.acked / a.duration:.0f} ack_latency_ms p50={pct(lat, 0.5):.2f} "
            f"p90={pct(lat, 0.9):.2f} p99={pct(lat, 0.99):.2f} max={pct(lat, 1.0):.2f}"
        )
