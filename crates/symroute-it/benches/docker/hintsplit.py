#!/usr/bin/env python3
"""Where a Podman start's time goes, from the daemon logs the docker bench keeps
(/tmp/symroute-bench-docker/podman*-symroute-daemon-*.log): for each hint whose answer
came after a start event's timestamp, namespace file -> event timestamp, event timestamp
-> the hint's answer, answer -> the next "converged" line. Prints p50 / p90 / max in ms.

    python3 crates/symroute-it/benches/docker/hintsplit.py /tmp/symroute-bench-docker/podman43-*.log
"""
import json,datetime,sys,bisect
for f in sys.argv[1:]:
    L=[json.loads(l) for l in open(f) if l.startswith('{')]
    def ts(l):
        t=datetime.datetime.strptime(l['timestamp'][:26],'%Y-%m-%dT%H:%M:%S.%f').replace(tzinfo=datetime.timezone.utc)
        return t.timestamp()
    ev=sorted(l['time_nano']/1e9 for l in L if l['message']=='event received' and l.get('kind')=='Start')
    rows=[]
    for i,l in enumerate(L):
        if l['message']=='hint answered':
            a=l['asked_unix_ns']/1e9; b=l['answered_unix_ns']/1e9
            for m in L[i+1:i+6]:
                if m['message']=='converged':
                    rows.append((a,b,ts(m))); break
    res=[]
    for a,b,c in rows:
        j=bisect.bisect_left(ev,a)
        if j<len(ev) and ev[j]<=b:
            e=ev[j]; res.append(((e-a)*1e3,(b-e)*1e3,(c-b)*1e3))
    print(f,len(rows),len(res))
    for k,name in enumerate(['hint->event ts','event ts->list answer','answer->converged']):
        v=sorted(r[k] for r in res)
        if v: print(' ',name,'p50 %.2f p90 %.2f max %.2f'%(v[len(v)//2],v[int(len(v)*.9)],v[-1]))
