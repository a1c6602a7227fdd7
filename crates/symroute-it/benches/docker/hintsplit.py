#!/usr/bin/env python3
"""Where a Podman start's time goes, from the daemon logs the docker bench keeps
(/tmp/symroute-bench-docker/podman*-symroute-daemon-*.log). For each hint whose answer
came after a start event's timestamp:

- namespace file -> event timestamp (how early the hint is);
- event timestamp -> the hint's answer: Podman's part. The list (Podman 4) or the early
  inspect (Podman 5) was already waiting on the container's lock, so this is the first
  moment Podman's API tells anyone that the container runs;
- answer -> namespace claimed: on Podman 4 libpod's inspect (Podman's too), on Podman 5
  nothing but the loop taking the answer (the inspect came with it);
- event timestamp -> namespace claimed: the two above per start, all of it waiting for
  Podman's answers;
- claimed -> "converged": the daemon's lock, read, plan and apply (the namespace was
  opened while Podman was starting the container).

Prints p50 / p90 / p99 / max in ms.

    python3 crates/symroute-it/benches/docker/hintsplit.py /tmp/symroute-bench-docker/podman43-*.log
"""
import bisect
import datetime
import json
import sys


def ts(line):
    t = datetime.datetime.strptime(line['timestamp'][:26], '%Y-%m-%dT%H:%M:%S.%f')
    return t.replace(tzinfo=datetime.timezone.utc).timestamp()


def pct(v):
    v = sorted(v)
    n = len(v)
    if not n:
        return 'none'
    return 'p50 %.2f  p90 %.2f  p99 %.2f  max %.2f' % (
        v[n // 2], v[int(n * .9)], v[min(n - 1, int(n * .99))], v[-1])


for f in sys.argv[1:]:
    L = [json.loads(x) for x in open(f) if x.startswith('{')]
    ev = sorted(x['time_nano'] / 1e9 for x in L
                if x['message'] == 'event received' and x.get('kind') == 'Start')
    cols = {k: [] for k in ('file', 'podman', 'inspect', 'engine', 'apply', 'total')}
    for i, x in enumerate(L):
        if x['message'] != 'hint answered':
            continue
        asked, answered = x['asked_unix_ns'] / 1e9, x['answered_unix_ns'] / 1e9
        j = bisect.bisect_left(ev, asked)
        if not (j < len(ev) and ev[j] <= answered):
            continue
        e = ev[j]
        claimed = None
        # The converge a hint makes is logged right after its answer; a start the
        # event path converged first has none (the next lines are another's).
        for m in L[i + 1:i + 3]:
            if m['message'] in ('hint answered', 'event received'):
                break
            if m['message'] == 'namespace opened ahead of time; claimed':
                claimed = ts(m)
            if m['message'] == 'converged':
                done = ts(m)
                cols['file'].append((e - asked) * 1e3)
                cols['podman'].append((answered - e) * 1e3)
                if claimed is not None:
                    cols['inspect'].append((claimed - answered) * 1e3)
                    cols['engine'].append((claimed - e) * 1e3)
                    cols['apply'].append((done - claimed) * 1e3)
                cols['total'].append((done - e) * 1e3)
                break
    print(f, '(%d starts)' % len(cols['total']))
    for k, name in (('file', 'namespace file -> event timestamp'),
                    ('podman', 'event timestamp -> Podman answers'),
                    ('inspect', 'answer -> namespace claimed'),
                    ('engine', 'event timestamp -> namespace claimed'),
                    ('apply', 'claimed -> converged'),
                    ('total', 'event timestamp -> converged')):
        print('  %-36s %s' % (name, pct(cols[k])))
