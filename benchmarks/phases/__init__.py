"""The phases of a run, in order (each prints a line every few seconds to stderr while it runs):

1. data      deterministic synthetic history (``synth``), produced with confluent-kafka, 8 partitions
2. ceiling   the broker's raw read rate of the same topics with a plain confluent-kafka consumer (median of N)
3. sql peer  PostgreSQL computing the same features with window functions over the same data in tables
4. floor     a bare Faust app (``benchmarks.floor``) over the same topics: noack_take + ack, nothing else;
             with the pipeline's tuned consumer settings, then with Faust's own defaults
   backfill  a fresh worker group over the history: first read (the worker's "Ready") to last row committed;
             then its rows are compared with the SQL peer's, every row, every column; peak RSS (VmHWM);
             the changelog records it wrote, per raw message; CPU per raw message; start to first message
   floor     both again, right after (defaults first): each floor's rate is the mean of its two runs
   command   ``faust -A solar_agents backfill`` in a fresh group: start to first message, last write to exit
5. live      fresh hours at a fixed rate into the running worker; produce-to-visible latency via LISTEN/NOTIFY
6. restore   stop, delete DATA_DIR, restart: changelog records / restore time; then check the restored state
7. 4x        a fresh worker group over the history repeated with later years: peak RSS against 1x;
             the py-spy profile of the worker
8. uvloop    with --uvloop-pairs N: pairs of the floor and of the backfill command on asyncio's loop and
             on uvloop

``--regions-scaling`` runs ``scaling`` alone instead: the backfill at 16, 1,000 and 5,000 regions, about the
same number of raw messages each.

Each phase is a function of the ``benchmarks.context.Run`` it adds its figures to.
"""
