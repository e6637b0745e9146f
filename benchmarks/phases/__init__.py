"""The phases of a run, in order (each prints a line every few seconds to stderr while it runs):

1. data      deterministic synthetic history (``synth``), produced with confluent-kafka, 8 partitions
2. ceiling   the broker's raw read rate of the same topics with a plain confluent-kafka consumer (median of N)
3. sql peer  PostgreSQL computing the same features with window functions over the same data in tables
4. floor     a bare Faust app (``benchmarks.floor``) over the same topics: noack_take + ack, nothing else
   backfill  a fresh worker group over the history: first read (the worker's "Ready") to last row committed;
             then its rows are compared with the SQL peer's, every row, every column; peak RSS (VmHWM);
             the changelog records it wrote, per raw message
   floor     again, right after: the floor's rate is the mean of the two runs around the backfill
5. live      fresh hours at a fixed rate into the running worker; produce-to-visible latency via LISTEN/NOTIFY
6. restore   stop, delete DATA_DIR, restart: changelog records / restore time; then check the restored state
7. 4x        a fresh worker group over the history repeated with later years: peak RSS against 1x;
             the py-spy profile of the worker

Each phase is a function of the ``benchmarks.context.Run`` it adds its figures to.
"""
