"""Shared by the publishers of bench/queue-vs-nats.sh (nats_pub.py, rabbitmq_pub.py): the
arguments both take, the percentile, and the one result line in loadgen's format."""


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


def report(name, args, sent, acked, failed, latencies):
    """Prints the run's counts, then acked_per_sec=... ack_latency_ms p50=... (loadgen's
    format, which the script parses). `acked` counts ACKs that came within --duration."""
    latencies.sort()
    print(
        f"{name} sent={sent} acked={len(latencies)} failed={failed} "
        f"rate={args.rate} inflight={args.inflight}"
    )
    print(
        f"acked_per_sec={acked / args.duration:.0f} ack_latency_ms p50={pct(latencies, 0.5):.2f} "
        f"p90={pct(latencies, 0.9):.2f} p99={pct(latencies, 0.99):.2f} max={pct(latencies, 1.0):.2f}"
    )
