#!/usr/bin/env bash
# Checks the Prometheus alerting rules and the Grafana dashboard in monitoring/ (CI runs it):
#   1. promtool check rules: the rules file parses, every expression is valid PromQL;
#   2. promtool test rules: the unit tests in ringwatch.rules.test.yml fire every alert
#      and keep quiet where they must;
#   3. the dashboard is valid JSON, every panel query is valid PromQL (promtool checks them
#      as recording rules, Grafana's variables replaced by sample values);
#   4. every Ringwatch metric name the rules or the dashboard use is registered in the code
#      (a typo in a name would make an alert never fire, silently).
# promtool comes from Debian's prometheus package (scripts/install-test-deps.sh installs it).
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v promtool >/dev/null 2>&1; then
    echo "monitoring/check.sh: promtool missing: run scripts/install-test-deps.sh (Debian package prometheus)" >&2
    exit 1
fi
rules=monitoring/ringwatch.rules.yml
tests=monitoring/ringwatch.rules.test.yml
dashboard=monitoring/grafana-dashboard.json
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "-- promtool check rules $rules"
promtool check rules "$rules"

echo "-- promtool test rules $tests"
promtool test rules "$tests"

echo "-- $dashboard: JSON"
python3 -m json.tool "$dashboard" >/dev/null
echo "  valid JSON"

echo "-- $dashboard: panel queries as PromQL"
python3 - "$dashboard" "$tmp/dashboard.rules.yml" <<'EOF'
import json, sys
dash = json.load(open(sys.argv[1]))
subst = {"$__rate_interval": "1m", "$cma_job": "ringwatch-cma",
         "$reader_job": "ringwatch-packet-reader", "$nanoprobe_job": "ringwatch-nanoprobe"}
exprs = []
def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            exprs.append((p.get("title", "?"), t["expr"]))
        walk(p.get("panels", []))
walk(dash["panels"])
if not exprs:
    sys.exit("no panel queries found")
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        for k in sorted(subst, key=len, reverse=True):
            e = e.replace(k, subst[k])
        if "$" in e:
            sys.exit(f"panel {title!r}: unknown Grafana variable in {e!r}")
        out.write(f"      - record: dashboard:query_{i}\n        expr: {json.dumps(e)}\n")
print(f"  {len(exprs)} queries")
EOF
promtool check rules "$tmp/dashboard.rules.yml" | sed '/^$/d; s/^/  /'

echo "-- metric names used by the rules and the dashboard, against the code"
python3 - "$rules" "$dashboard" <<'EOF'
import json, pathlib, re, sys

# Where each prefix's names are registered: a metric `prefix + name` must have "name"
# as a string literal in one of these files (prometheus_client adds the prefix).
sources = {
    "cma_": ["replica/src/metrics.rs", "cma/src/admin.rs"],
    "ringwatch_reader_": ["packet-reader/src/metrics.rs", "daemon/src/metrics.rs"],
    "nanoprobe_": ["nanoprobe/src/metrics.rs", "daemon/src/metrics.rs"],
    "": ["worker/src/run.rs", "worker/src/commander.rs", "worker/src/sinks.rs"],
}
literals = {p: set() for p in sources}
for prefix, files in sources.items():
    for f in files:
        literals[prefix] |= set(re.findall(r'"([a-z_]+)"', pathlib.Path(f).read_text()))

# From the rules file: every expr (one line, or a block scalar after `expr: >-`) and the
# comments (its list of the metrics used); not the descriptions, which name config keys too.
rules_parts = []
lines = pathlib.Path(sys.argv[1]).read_text().splitlines()
for i, line in enumerate(lines):
    stripped = line.strip()
    if stripped.startswith("#"):
        rules_parts.append(stripped)
    elif stripped.startswith("expr:"):
        rest = stripped[len("expr:"):].strip()
        if rest not in (">", ">-", "|", "|-"):
            rules_parts.append(rest)
            continue
        indent = len(line) - len(line.lstrip())
        for follow in lines[i + 1:]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            rules_parts.append(follow.strip())
rules_text = "\n".join(rules_parts)
dash = json.load(open(sys.argv[2]))
dash_exprs = []
def walk(panels):
    for p in panels:
        dash_exprs.extend(t["expr"] for t in p.get("targets", []))
        walk(p.get("panels", []))
walk(dash["panels"])

# Grafana variables ($cma_job) are not metrics.
name_re = re.compile(r"(?<![$\w])(?:cma|ringwatch|nanoprobe)_[a-z0-9_]*[a-z0-9]\b")
def known(metric):
    candidates = [metric]
    for suffix in ("_total", "_bucket", "_sum", "_count"):
        if metric.endswith(suffix):
            candidates.append(metric[: -len(suffix)])
    for c in candidates:
        for prefix, names in literals.items():
            if c.startswith(prefix) and c[len(prefix):] in names:
                return True
    return False

bad = 0
for where, text in [("rules", rules_text)] + [("dashboard", e) for e in dash_exprs]:
    for m in sorted(set(name_re.findall(text))):
        if not known(m):
            print(f"  {where}: {m} is not registered in the code", file=sys.stderr)
            bad += 1
used = set(name_re.findall(rules_text + "\n" + "\n".join(dash_exprs)))
if bad:
    sys.exit(f"monitoring/check.sh: {bad} unknown metric name(s)")
print(f"  {len(used)} metric names, all registered")
EOF
echo "monitoring/check.sh: ok"
