"""How long each step really waited for its batch, read from the raw trace.

The profile plugin counts a step's whole `IteratorGetNext` as input time.
That is two things: waiting for a batch still being made, and handing a
ready one over from tf.data's threads (a lock, a wake-up, the op itself).
Only the first is what a faster pipeline removes; one cached batch fed
through tf.data pays the hand-over too. On sub-millisecond steps the
hand-over alone is 5-11% of a step (the digits MLP), which the plugin calls
"moderately input-bound" though separate runs fed one cached batch are no
faster.

The trace tells the two apart. A root prefetch buffer records each element
twice with the same `element_id`: `PrefetchProduce` on the thread that made
it, `PrefetchConsume` inside the step's GetNext that took it. A GetNext
whose element was finished before the GetNext began waited for nothing;
otherwise it waited from its start until the element was finished and
taken (the take bounds it: the producer's event closes a little after the
element is in the buffer, later on a busy host). Without a root prefetch
it waited until the pipeline's root stage returned the batch: right where
nothing works ahead of the step; a root parallel map or batch keeps a
buffer of its own, whose ready elements' hand-over then counts as waiting,
as the plugin counts it (tfpipe puts a prefetch at the root unless
`data.prefetch: 0`). A consumed element whose production is not in the
trace (made before the session began) counts as ready. This is the same
quantity the always-on timer measures with stamped batches
(tfpipe/profile/trace.py), read from another source.

Example:

```python
waits = waiting_ms("runs/x/logs/plugins/profile/2026_...")
waits[280]   # {"getnext_ms": 0.66, "wait_ms": 0.0, "getnexts": 5}, for the marker of step 280
```
"""

from __future__ import annotations

from pathlib import Path

_GETNEXT = "IteratorGetNextOp::DoCompute"
_ROOT_PREFETCH = "Iterator::Root::Prefetch"


def _stats(event, names) -> dict:
    out = {}
    for s in event.stats:
        kind = s.WhichOneof("value")
        out[names.get(s.metadata_id, "")] = getattr(s, kind) if kind else None
    return out


def waiting_ms(run_dir: str | Path) -> dict[int, dict]:
    """Per root step marker (by its step number): GetNext time, and the part of it spent waiting.

    Reads every `.xplane.pb` in `run_dir` (one trace session). Returns {} when
    the trace has no root step markers or no GetNext inside them.
    """
    # Imported here: the proto module comes with TensorFlow, a heavy import.
    from tensorflow.tsl.profiler.protobuf import xplane_pb2  # pylint: disable=import-outside-toplevel

    markers, getnexts, prefetches, consumes, stages, produced = [], [], [], [], [], {}
    for path in sorted(Path(run_dir).glob("*.xplane.pb")):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            if not plane.name.startswith("/host:"):
                continue
            names = {k: v.name for k, v in plane.event_metadata.items()}
            stat_names = {k: v.name for k, v in plane.stat_metadata.items()}
            for line in plane.lines:
                base = line.timestamp_ns * 1000
                # Keyed by thread: a prefetch inside the pipeline hands elements
                # over on tf.data's own threads meanwhile.
                thread = (path.name, plane.id, line.id)
                for e in line.events:
                    name = names.get(e.metadata_id, "")
                    start = base + e.offset_ps
                    span = (start, start + e.duration_ps)
                    if name == _GETNEXT:
                        getnexts.append((*span, thread))
                    elif name == _ROOT_PREFETCH:
                        prefetches.append((start, thread))
                        stages.append((*span, thread))
                    elif name.startswith("Iterator::Root::") and name.count("::") == 2:
                        stages.append((*span, thread))
                    elif name == "PrefetchConsume":
                        consumes.append((start, thread, _stats(e, stat_names).get("element_id")))
                    elif name == "PrefetchProduce":
                        produced[_stats(e, stat_names).get("element_id")] = span[1]
                    elif e.stats:
                        st = _stats(e, stat_names)
                        if st.get("_r") == 1 and "step_num" in st:
                            markers.append((*span, int(st["step_num"])))
    if not markers or not getnexts:
        return {}
    consumes.sort()  # the first take inside a GetNext is its own
    out = {}
    for m_start, m_end, number in markers:
        total = wait = 0.0
        count = 0
        for g_start, g_end, thread in getnexts:
            if not m_start <= g_start < m_end:
                continue
            count += 1
            total += g_end - g_start
            wait += _wait(g_start, g_end, thread, prefetches, consumes, produced, stages)
        if count:
            out[number] = {"getnext_ms": total / 1e9, "wait_ms": wait / 1e9, "getnexts": count}
    return out


def _wait(g_start: int, g_end: int, thread, prefetches: list, consumes: list, produced: dict,
          stages: list = ()) -> float:
    """Picoseconds one GetNext waited: until its batch was made, nothing if a root prefetch held it ready."""
    if not any(g_start <= p < g_end and t == thread for p, t in prefetches):
        # Nothing works ahead: the batch is made inside the GetNext, by the
        # root's stage; after that stage returns, the rest is hand-over.
        made = max((e for s, e, t in stages if t == thread and g_start <= s < g_end), default=g_end)
        return min(made, g_end) - g_start
    taken = next(((c, eid) for c, t, eid in consumes if g_start <= c < g_end and t == thread), None)
    if taken is None:
        return g_end - g_start
    consumed, eid = taken
    ready = produced.get(eid)
    if ready is None or ready <= g_start:
        # Made before the GetNext began (or before the trace did): it sat in the buffer.
        return 0.0
    # Waited until the batch was in the buffer and taken. The producer's event
    # ends a little after it pushed the batch, later still on a busy host
    # (its thread preempted before the event closes): a batch taken before
    # that end was there already, so the take bounds the wait.
    return min(ready, consumed, g_end) - g_start
