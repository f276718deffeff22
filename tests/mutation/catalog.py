"""Semantic mutations of the hot spots, each with the tests that must kill it. Every one is a
plausible bug in code that the offline and online paths share, so only the plain references
(brute force, hand-built cases) can see it: parity cannot.

A mutation names one snippet that must occur exactly once in its file; when code moves, the
runner reports the mutation as stale and the catalog is updated, never silently skipped."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    id: str
    file: str
    find: str
    replace: str
    why: str
    tests: tuple[str, ...]


PIT = "tests/offline/test_point_in_time.py"
WINDOWS_REF = "tests/offline/test_windows_reference.py"
# The random brute-force tests: a mutation listed with them is one they must see by themselves.
WINDOWS_REF_RANDOM = WINDOWS_REF + "::test_aggregates_match_brute_force"
PIT_RANDOM = "tests/offline/test_point_in_time.py::test_training_set_matches_brute_force"
CONTRACT = "tests/online/test_store_contract.py"
KERNELS = "tests/plan/test_kernels.py"
EXACT = "tests/plan/test_exact_sum.py"
PUSH = "tests/serving/test_push.py"
WINDOWS_PARITY = "tests/parity/test_windows_parity.py"
SERVER = "tests/serving/test_server.py"
READS = "tests/online/test_reads.py"
LOG = "tests/offline/test_event_log.py"
OPERATING = "tests/serving/test_operating.py"
SANDBOX = "tests/offline/test_sql_sandbox.py"
REDIS_SECURITY = "tests/online/test_redis_security.py"
CLUSTER = "tests/online/test_cluster.py"

MUTATIONS: list[Mutation] = [
    # -- the point-in-time rule, offline ---------------------------------------------------
    Mutation("pit-created-visibility", "featurestore/offline/feature_tables.py",
             "greatest({event}, {created}) AS __vis", "{event} AS __vis",
             "a row is visible from its event time even when it was created later",
             (PIT_RANDOM,)),
    Mutation("pit-tie-break-order", "featurestore/offline/feature_tables.py",
             "arg_max(__seq, (__event_ts, __created, __seq))",
             "arg_max(__seq, (__event_ts, __seq, __created))",
             "equal event times broken by file order before created time", (PIT,)),
    Mutation("pit-tie-break-created", "featurestore/offline/feature_tables.py",
             "arg_max(__seq, (__event_ts, __created, __seq))",
             "arg_max(__seq, (__event_ts, -epoch_us(__created), __seq))",
             "equal event times: the earliest created row wins", (PIT,)),
    Mutation("ttl-edge-offline", "featurestore/offline/feature_tables.py",
             "({alias}.__event_ts < {label_ts} - to_microseconds",
             "({alias}.__event_ts <= {label_ts} - to_microseconds",
             "a row exactly ttl old counts as expired offline",
             (PIT + "::test_ttl_edge",)),
    # -- online rows -------------------------------------------------------------------------
    Mutation("ttl-edge-online", "featurestore/online/lookup.py",
             "event_ts[r] < as_of_us - ttl_us", "event_ts[r] <= as_of_us - ttl_us",
             "a row exactly ttl old counts as expired online", (READS,)),
    Mutation("write-if-newer-created", "featurestore/online/store.py",
             "(nc > oc or (nc == oc", "(nc < oc or (nc == oc",
             "the online write keeps the earlier created row on an event-time tie", (CONTRACT,)),
    Mutation("write-if-newer-seq", "featurestore/online/store.py",
             "ns >= os", "ns <= os",
             "the online write keeps the lower seq on a full tie of times", (CONTRACT,)),
    Mutation("status-null-vs-present", "featurestore/online/lookup.py",
             "PRESENT if ok else NULL if state == PRESENT else state",
             "PRESENT if ok else NOT_FOUND if state == PRESENT else state",
             "a stored null is served as NOT_FOUND", (READS,)),
    Mutation("status-offline-null", "featurestore/plan/execute.py",
             "np.where((state == PRESENT) & ~valid, NULL, state)",
             "np.where((state == PRESENT) & ~valid, NOT_FOUND, state)",
             "a stored null is NOT_FOUND in training sets", (PIT_RANDOM,)),
    Mutation("row-codec-bit-order", "featurestore/online/codec.py",
             "valid[i, r] = (buffer[p + i // 8] >> (i % 8)) & 1",
             "valid[i, r] = (buffer[p + i // 8] >> (7 - i % 8)) & 1",
             "the validity bitmap read in the wrong bit order", (READS,)),
    # -- transforms -------------------------------------------------------------------------
    Mutation("transform-missing-input", "featurestore/plan/kernels.py",
             'valid = " and ".join(f"m{k}[i]" for k in range(n)) or "True"',
             'valid = "True"',
             "a missing transform input is passed as its filler (0, '') instead of NULL",
             (KERNELS,)),
    # -- accumulators and exact sums ----------------------------------------------------------
    Mutation("minmax-negative-zero", "featurestore/aggregation/inputs.py",
             "out[i] = bits[i] ^ _MASK63", "out[i] = bits[i] ^ _MASK63 if values[i] != 0.0 else 1",
             "-0.0 sorts above 0.0 in min/max", (WINDOWS_REF_RANDOM,)),
    Mutation("nan-not-canonical", "featurestore/aggregation/inputs.py",
             "out[i] = CANONICAL_NAN", "out[i] = bits[i]",
             "NaNs with different payloads order and count as different values",
             (WINDOWS_REF_RANDOM, WINDOWS_REF + "::test_float_edge_values")),
    Mutation("distinct-negative-zero", "featurestore/aggregation/inputs.py",
             "if is_float and k == -1:", "if is_float and k == -2:",
             "count_distinct tells -0.0 from 0.0", (WINDOWS_REF_RANDOM,)),
    Mutation("distinct-exact-limit", "featurestore/aggregation/functions/count_distinct.py",
             "    if n == EXACT_SET:\n", "    if n == EXACT_SET - 8:\n",
             "count_distinct switches to the estimate before 32 values", (WINDOWS_REF,)),
    Mutation("first-last-created-tie", "featurestore/aggregation/functions/first.py",
             "return created > created2", "return created < created2",
             "first/last break event-time ties by the earlier created time", (WINDOWS_REF,)),
    Mutation("first-last-value-tie", "featurestore/aggregation/functions/first.py",
             "return key > key2", "return key < key2",
             "first/last break full time ties by the smaller value", (WINDOWS_REF,)),
    Mutation("variance-divisor", "featurestore/aggregation/functions/var.py",
             "/ (float(n) * float(n - 1))", "/ (float(n) * float(n))",
             "population instead of sample variance", (WINDOWS_REF_RANDOM,)),
    Mutation("exact-sum-rounding", "featurestore/aggregation/exact_sum.py",
             "if (w & 1) and (sticky or (r & 1)):", "if w & 1:",
             "the exact sum rounded half up instead of half to even", (WINDOWS_REF,)),
    Mutation("exact-sum-truncated", "featurestore/aggregation/exact_sum.py",
             "if (w & 1) and (sticky or (r & 1)):", "if False:",
             "the exact sum truncated instead of rounded", (EXACT, WINDOWS_REF_RANDOM)),
    # -- windows --------------------------------------------------------------------------------
    Mutation("window-tail-one-hop-short", "featurestore/aggregation/windows.py",
             "    tail = (t // spec[a, HOP]) * spec[a, HOP] - spec[a, WINDOW]\n    i = lower_bound",
             "    tail = (t // spec[a, HOP]) * spec[a, HOP] - spec[a, WINDOW] + spec[a, HOP]\n"
             "    i = lower_bound",
             "offline windows start one hop late", (WINDOWS_REF_RANDOM,)),
    Mutation("window-head-exclusive", "featurestore/aggregation/windows.py",
             "while i < hi and ts[i] <= t:", "while i < hi and ts[i] < t:",
             "an event exactly at T is outside the window", (WINDOWS_REF,)),
    Mutation("window-created-visibility", "featurestore/aggregation/windows.py",
             "        if created[i] <= t:\n", "        if created[i] <= t + 1_000_000:\n",
             "events count a second before they were created", (WINDOWS_REF_RANDOM,)),
    Mutation("online-window-one-hop-short", "featurestore/online/tile_format.py",
             "first_full = k_head - spec[a, WINDOW] // spec[a, HOP]",
             "first_full = k_head - spec[a, WINDOW] // spec[a, HOP] + 1",
             "online windows merge one tile too few", (READS,)),
    # -- pushes and the event log ---------------------------------------------------------------
    Mutation("push-visible-at-event-time", "featurestore/push.py",
             "created=np.maximum(ts, ingested),", "created=ts,",
             "pushed events count online from their event time, not their arrival",
             (WINDOWS_PARITY + "::test_a_pushed_event_tying_a_stored_one_is_the_later_on_both_paths",
              WINDOWS_PARITY)),
    # A push reads the applied sets under its locks, so the script's own check of them only
    # backs that read up: the read is what a batch sent twice meets.
    Mutation("push-mark-ignored", "featurestore/online/store.py",
             "if score is None]", "]",
             "a batch a storage holds is pushed into it again", (CONTRACT,)),
    Mutation("push-lock-ignored", "featurestore/online/store.py",
             "  if redis.call('GET', lock) ~= token then return -1 end\n", "",
             "a push whose lock expired writes while another push holds it", (CONTRACT,)),
    Mutation("past-read-row-newer-served", "featurestore/online/lookup.py",
             "if found[r] and visible[r] > as_of_us:",
             "if found[r] and visible[r] > as_of_us + 1:",
             "a row that became visible just after as_of is served for that as_of",
             (READS + "::test_rows_statuses_and_ttl_edges_match_the_reference",)),
    Mutation("past-read-window-before-push", "featurestore/online/lookup.py",
             "earliest = max(w.end_us, int(fresh or 0))", "earliest = w.end_us",
             "a windowed read before the latest push the tiles hold is answered",
             (CONTRACT, WINDOWS_PARITY)),
    Mutation("fence-ignored", "featurestore/online/lookup.py",
             "        if active != self._storages:\n", "        if False:\n",
             "a read prepared before a flip, or against an emptied Redis, is answered",
             (CONTRACT,)),
    Mutation("flip-ignores-missing-batches", "featurestore/online/store.py",
             "if #missing > 0 then return #missing end", "",
             "a materialization flips to a storage missing batches pushed meanwhile",
             (CONTRACT,)),
    Mutation("log-claim-ignored", "featurestore/offline/event_log.py",
             "return int(claim.read_text().split()[0]), False", "return now_us, True",
             "a retried batch id is logged again under a new ingest time", (LOG,)),
    Mutation("log-read-twice", "featurestore/offline/windowed.py",
             "WHERE {INGESTED} IS NULL)", ")",
             "training sets count pushed events both from the log and from the last ingest",
             (LOG,)),
    # -- Redis Cluster ----------------------------------------------------------------------
    Mutation("cluster-marker-ignored", "featurestore/online/cluster.py",
             "if value is None or token is None or value.decode() != token]", "if False]",
             "rows of a cluster node that lost its data are served as NOT_FOUND",
             (CLUSTER + "::test_a_node_that_lost_its_data_is_refused_never_read_as_missing_rows",)),
    Mutation("cluster-marker-token-ignored", "featurestore/online/cluster.py",
             "if value is None or token is None or value.decode() != token]",
             "if value is None]",
             "a view's rows lost with a node are served as NOT_FOUND once another view's "
             "materialization wrote the markers again",
             (CLUSTER + "::test_a_view_not_materialized_since_a_node_lost_its_data_is_refused",)),
    Mutation("cluster-moved-not-followed", "featurestore/online/cluster.py",
             'return message.startswith(("MOVED", "ASK", "TRYAGAIN")) or "non local key" in '
             "message", "return False",
             "a read of a slot that moved to another node fails instead of following it",
             (CLUSTER + "::test_a_key_moved_to_another_node_is_still_read",)),
    # -- past reads -------------------------------------------------------------------------------
    Mutation("as-of-expired-head-served", "featurestore/online/lookup.py",
             "if any(b is None for b in blobs):", "if False:",
             "a past read whose raw head events expired is answered instead of refused", (READS,)),
    # -- security ---------------------------------------------------------------------------
    Mutation("scope-read-any", "featurestore/serving/security.py",
             "return ALL in self.read or (bool(service) and service in self.read)",
             "return True", "a token reads feature services outside its scope",
             (OPERATING + "::test_tls_tokens_and_scopes",)),
    Mutation("sandbox-external-access", "featurestore/offline/sql.py",
             'con.execute("SET enable_external_access = false")', "pass",
             "analysts' SQL reads and writes files outside the store", (SANDBOX,)),
    Mutation("redis-errors-unscrubbed", "featurestore/online/urls.py",
             'text = text.replace(secret, "***")', "pass",
             "a Redis error that quotes the password reaches a log line or a caller",
             (REDIS_SECURITY,)),
]
