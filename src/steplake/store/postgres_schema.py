"""PostgreSQL schema, versioned like the SQLite one (``PG_MIGRATIONS[i]`` moves version i to i+1).

Columns mirror store/schema.py one to one (so ``steplake migrate`` copies rows verbatim): token ids are
``bytea`` (little-endian int32, store/codec.py), JSON documents are ``bytea`` holding the same orjson bytes
(exact round trip), timestamps are epoch seconds as ``double precision``. Extra columns: ``groups.seq``
(list order, SQLite's rowid) and the append state of a trajectory (``last_step_id``, ``last_seq``: the
last step's full prompt + response ids, kept while the trajectory is open so continuity of the next step
needs no chain walk; NULL means "rebuild from the chain").
"""

from __future__ import annotations

from .funnel_sql import (
    GROUP_COUNTS,
    TRAJECTORY_COUNTS,
    pg_counters_migration,
    pg_funnel_migration,
    pg_slotted_migration,
)

PG_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
  seq BIGSERIAL UNIQUE,
  group_id TEXT PRIMARY KEY,
  channel TEXT NOT NULL,
  size INTEGER NOT NULL,
  n_trajectories INTEGER NOT NULL DEFAULT 0,
  n_complete INTEGER NOT NULL DEFAULT 0,
  n_abandoned INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'collecting',
  metadata BYTEA,
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  ready_at DOUBLE PRECISION,
  lease_batch_id TEXT,
  lease_expires_at DOUBLE PRECISION,
  consumed_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS groups_pick ON groups(channel, status, ready_at);
CREATE TABLE IF NOT EXISTS trajectories (
  seq BIGSERIAL PRIMARY KEY,
  trajectory_id TEXT NOT NULL UNIQUE,
  group_id TEXT NOT NULL,
  channel TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'open',
  reward DOUBLE PRECISION,
  explicit_reward DOUBLE PRECISION,
  reward_components BYTEA,
  n_steps INTEGER NOT NULL DEFAULT 0,
  next_index INTEGER NOT NULL DEFAULT 0,
  n_tokens BIGINT NOT NULL DEFAULT 0,
  n_realigned INTEGER NOT NULL DEFAULT 0,
  n_fork INTEGER NOT NULL DEFAULT 0,
  min_policy INTEGER,
  max_policy INTEGER,
  metadata BYTEA,
  agent TEXT,
  created_at DOUBLE PRECISION NOT NULL,
  updated_at DOUBLE PRECISION NOT NULL,
  completed_at DOUBLE PRECISION,
  last_finish_reason TEXT,
  last_tool_calls INTEGER NOT NULL DEFAULT 0,
  exchange_hash TEXT,
  quality TEXT NOT NULL DEFAULT 'unreviewed',
  trainable INTEGER NOT NULL DEFAULT 1,
  tags BYTEA,
  note TEXT,
  reviewer TEXT,
  curated_at DOUBLE PRECISION,
  last_step_id TEXT,
  last_seq BYTEA
);
CREATE INDEX IF NOT EXISTS traj_group ON trajectories(group_id);
CREATE INDEX IF NOT EXISTS traj_open ON trajectories(status, updated_at);
CREATE INDEX IF NOT EXISTS traj_channel ON trajectories(channel, seq);
CREATE INDEX IF NOT EXISTS traj_updated ON trajectories(channel, updated_at);
CREATE INDEX IF NOT EXISTS traj_exchange ON trajectories(exchange_hash) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS steps (
  seq BIGSERIAL PRIMARY KEY,
  step_id TEXT NOT NULL UNIQUE,
  trajectory_id TEXT NOT NULL,
  group_id TEXT NOT NULL,
  step_index INTEGER NOT NULL,
  channel TEXT NOT NULL,
  policy_version INTEGER NOT NULL,
  continuity TEXT NOT NULL,
  parent_step_id TEXT,
  shared_prefix_len INTEGER NOT NULL,
  prompt_len INTEGER NOT NULL,
  response_len INTEGER NOT NULL,
  prompt_tail BYTEA NOT NULL,
  response_ids BYTEA NOT NULL,
  response_logprobs BYTEA,
  token_source TEXT NOT NULL,
  finish_reason TEXT,
  model TEXT,
  reward DOUBLE PRECISION,
  latency_ms DOUBLE PRECISION,
  created_at DOUBLE PRECISION NOT NULL,
  content_hash BYTEA NOT NULL,
  doc BYTEA NOT NULL,
  quality TEXT NOT NULL DEFAULT 'unreviewed',
  trainable INTEGER NOT NULL DEFAULT 1,
  tags BYTEA,
  note TEXT,
  reviewer TEXT,
  curated_at DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS steps_traj ON steps(trajectory_id, step_index);
CREATE INDEX IF NOT EXISTS steps_group ON steps(group_id);
CREATE TABLE IF NOT EXISTS rewards (
  id BIGSERIAL PRIMARY KEY,
  trajectory_id TEXT,
  step_id TEXT,
  name TEXT NOT NULL,
  value DOUBLE PRECISION NOT NULL,
  version TEXT NOT NULL,
  details BYTEA,
  created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS rewards_traj ON rewards(trajectory_id);
CREATE INDEX IF NOT EXISTS rewards_step ON rewards(step_id);
CREATE TABLE IF NOT EXISTS curation_history (
  id BIGSERIAL PRIMARY KEY,
  target_kind TEXT NOT NULL,
  target_id TEXT NOT NULL,
  change BYTEA NOT NULL,
  before BYTEA,
  reviewer TEXT,
  at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS curation_target ON curation_history(target_id);
CREATE TABLE IF NOT EXISTS feedback (
  id BIGSERIAL PRIMARY KEY,
  trajectory_id TEXT,
  step_id TEXT,
  kind TEXT NOT NULL,
  value BYTEA,
  comment TEXT,
  author TEXT,
  created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_traj ON feedback(trajectory_id);
CREATE INDEX IF NOT EXISTS feedback_step ON feedback(step_id);
CREATE TABLE IF NOT EXISTS batches (
  batch_id TEXT PRIMARY KEY,
  channel TEXT NOT NULL,
  recipe TEXT,
  layout TEXT,
  request BYTEA NOT NULL,
  group_ids BYTEA NOT NULL,
  trajectory_ids BYTEA NOT NULL,
  details BYTEA,
  policy_version INTEGER NOT NULL,
  created_at DOUBLE PRECISION NOT NULL,
  lease_expires_at DOUBLE PRECISION NOT NULL,
  acked_at DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS policy (
  version INTEGER PRIMARY KEY,
  weights_path TEXT,
  note TEXT,
  created_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  id BIGSERIAL PRIMARY KEY,
  kind TEXT NOT NULL,
  data BYTEA NOT NULL,
  at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
  key_id TEXT PRIMARY KEY,
  secret_hash TEXT NOT NULL UNIQUE,
  scope TEXT NOT NULL,
  name TEXT,
  created_at DOUBLE PRECISION NOT NULL,
  revoked_at DOUBLE PRECISION,
  last_used_at DOUBLE PRECISION
)
"""

# v2: message search reads an index table (one row per step with text; seq = steps.seq), trigram-indexed
# when the pg_trgm extension can be used (PostgresStore adds that index after the migration).
PG_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS step_text (
  seq BIGINT PRIMARY KEY,
  trajectory_id TEXT NOT NULL,
  text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS step_text_traj ON step_text(trajectory_id)
"""

# v3: a key may be bound to a session (steplake.store.keys): its JSON binding, NULL for an ordinary key.
PG_SCHEMA_V3 = """
ALTER TABLE keys ADD COLUMN IF NOT EXISTS binding BYTEA
"""

# audit log (steplake.store.audit): who changed the pool as an administrator, what, when, from where.
PG_SCHEMA_AUDIT = """
CREATE TABLE IF NOT EXISTS audit (
  id BIGSERIAL PRIMARY KEY,
  at DOUBLE PRECISION NOT NULL,
  actor TEXT NOT NULL,
  via TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  summary BYTEA,
  client TEXT
);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, id);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor, id)
"""

# reward claims (steplake.store.claims): which server scores a trajectory with a function version, once
PG_SCHEMA_REWARD_CLAIMS = """
CREATE TABLE IF NOT EXISTS reward_claims (
  trajectory_id TEXT NOT NULL,
  component TEXT NOT NULL,
  version TEXT NOT NULL,
  claimed_by TEXT NOT NULL,
  claimed_at DOUBLE PRECISION NOT NULL,
  done_at DOUBLE PRECISION,
  PRIMARY KEY (trajectory_id, component, version)
)
"""

# the dashboard funnel's counts as counters kept by triggers (store/funnel_sql.py); counted once from the rows
PG_SCHEMA_FUNNEL = pg_funnel_migration()
# the funnel's group stages (complete trajectories of ready/leased/consumed groups) as counters kept by triggers too
PG_SCHEMA_FUNNEL_GROUPS = pg_counters_migration(GROUP_COUNTS)
# the funnel counters slotted: each transaction adds to one of 16 rows per counter, so appends of several servers
# do not wait on one row until commit (store/funnel_sql.py); readers sum the slots
PG_SCHEMA_FUNNEL_SLOTS = pg_slotted_migration(TRAJECTORY_COUNTS, GROUP_COUNTS)

PG_MIGRATIONS: list[str] = [PG_SCHEMA_V1, PG_SCHEMA_V2, PG_SCHEMA_V3, PG_SCHEMA_AUDIT, PG_SCHEMA_REWARD_CLAIMS, PG_SCHEMA_FUNNEL,
                            PG_SCHEMA_FUNNEL_GROUPS, PG_SCHEMA_FUNNEL_SLOTS]
PG_TEXT_INDEX_VERSION = 2
PG_SCHEMA_VERSION = len(PG_MIGRATIONS)

# Tables whose integer ids come from a sequence: ``steplake migrate`` copies ids verbatim and then moves
# the sequence past them.
SERIAL_COLUMNS: dict[str, str] = {"groups": "seq", "trajectories": "seq", "steps": "seq", "rewards": "id",
                                  "curation_history": "id", "feedback": "id", "events": "id",
                                  "audit": "id"}

__all__ = ["PG_MIGRATIONS", "PG_SCHEMA_VERSION", "PG_TEXT_INDEX_VERSION", "SERIAL_COLUMNS"]
