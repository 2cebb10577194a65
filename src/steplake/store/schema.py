"""SQLite schema, versioned. ``MIGRATIONS[i]`` moves a database from version i to i+1."""

from __future__ import annotations

from .funnel_sql import (
                         GROUP_COUNTS,
                         TRAJECTORY_COUNTS,
                         sqlite_counters_migration,
                         sqlite_funnel_migration,
                         sqlite_lean_migration,
)

SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS groups (
  group_id TEXT PRIMARY KEY,
  channel TEXT NOT NULL,
  size INTEGER NOT NULL,
  n_trajectories INTEGER NOT NULL DEFAULT 0,
  n_complete INTEGER NOT NULL DEFAULT 0,
  n_abandoned INTEGER NOT NULL DEFAULT 0,
  status TEXT NOT NULL DEFAULT 'collecting',
  metadata BLOB,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  ready_at REAL,
  lease_batch_id TEXT,
  lease_expires_at REAL,
  consumed_at REAL
);
CREATE INDEX IF NOT EXISTS groups_pick ON groups(channel, status, ready_at);
CREATE TABLE IF NOT EXISTS trajectories (
  seq INTEGER PRIMARY KEY,
  trajectory_id TEXT NOT NULL UNIQUE,
  group_id TEXT NOT NULL,
  channel TEXT NOT NULL,
  status TEXT NOT NULL DEFAULT 'open',
  reward REAL,
  explicit_reward REAL,
  reward_components BLOB,
  n_steps INTEGER NOT NULL DEFAULT 0,
  next_index INTEGER NOT NULL DEFAULT 0,
  n_tokens INTEGER NOT NULL DEFAULT 0,
  n_realigned INTEGER NOT NULL DEFAULT 0,
  n_fork INTEGER NOT NULL DEFAULT 0,
  min_policy INTEGER,
  max_policy INTEGER,
  metadata BLOB,
  agent TEXT,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  completed_at REAL,
  last_finish_reason TEXT,
  last_tool_calls INTEGER NOT NULL DEFAULT 0,
  exchange_hash TEXT,
  quality TEXT NOT NULL DEFAULT 'unreviewed',
  trainable INTEGER NOT NULL DEFAULT 1,
  tags BLOB,
  note TEXT,
  reviewer TEXT,
  curated_at REAL
);
CREATE INDEX IF NOT EXISTS traj_group ON trajectories(group_id);
CREATE INDEX IF NOT EXISTS traj_open ON trajectories(status, updated_at);
CREATE INDEX IF NOT EXISTS traj_channel ON trajectories(channel, seq);
CREATE INDEX IF NOT EXISTS traj_exchange ON trajectories(exchange_hash) WHERE status = 'open';
CREATE TABLE IF NOT EXISTS steps (
  seq INTEGER PRIMARY KEY,
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
  prompt_tail BLOB NOT NULL,
  response_ids BLOB NOT NULL,
  response_logprobs BLOB,
  token_source TEXT NOT NULL,
  finish_reason TEXT,
  model TEXT,
  reward REAL,
  latency_ms REAL,
  created_at REAL NOT NULL,
  content_hash BLOB NOT NULL,
  doc BLOB NOT NULL,
  quality TEXT NOT NULL DEFAULT 'unreviewed',
  trainable INTEGER NOT NULL DEFAULT 1,
  tags BLOB,
  note TEXT,
  reviewer TEXT,
  curated_at REAL
);
CREATE UNIQUE INDEX IF NOT EXISTS steps_traj ON steps(trajectory_id, step_index);
CREATE INDEX IF NOT EXISTS steps_group ON steps(group_id);
CREATE TABLE IF NOT EXISTS rewards (
  id INTEGER PRIMARY KEY,
  trajectory_id TEXT,
  step_id TEXT,
  name TEXT NOT NULL,
  value REAL NOT NULL,
  version TEXT NOT NULL,
  details BLOB,
  created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rewards_traj ON rewards(trajectory_id);
CREATE INDEX IF NOT EXISTS rewards_step ON rewards(step_id);
CREATE TABLE IF NOT EXISTS curation_history (
  id INTEGER PRIMARY KEY,
  target_kind TEXT NOT NULL,
  target_id TEXT NOT NULL,
  change BLOB NOT NULL,
  before BLOB,
  reviewer TEXT,
  at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS curation_target ON curation_history(target_id);
CREATE TABLE IF NOT EXISTS feedback (
  id INTEGER PRIMARY KEY,
  trajectory_id TEXT,
  step_id TEXT,
  kind TEXT NOT NULL,
  value BLOB,
  comment TEXT,
  author TEXT,
  created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_traj ON feedback(trajectory_id);
CREATE INDEX IF NOT EXISTS feedback_step ON feedback(step_id);
CREATE TABLE IF NOT EXISTS batches (
  batch_id TEXT PRIMARY KEY,
  channel TEXT NOT NULL,
  recipe TEXT,
  layout TEXT,
  request BLOB NOT NULL,
  group_ids BLOB NOT NULL,
  trajectory_ids BLOB NOT NULL,
  details BLOB,
  policy_version INTEGER NOT NULL,
  created_at REAL NOT NULL,
  lease_expires_at REAL NOT NULL,
  acked_at REAL
);
CREATE TABLE IF NOT EXISTS policy (
  version INTEGER PRIMARY KEY,
  weights_path TEXT,
  note TEXT,
  created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  data BLOB NOT NULL,
  at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
  key_id TEXT PRIMARY KEY,
  secret_hash TEXT NOT NULL UNIQUE,
  scope TEXT NOT NULL,
  name TEXT,
  created_at REAL NOT NULL,
  revoked_at REAL,
  last_used_at REAL
);
"""

# v2: list pages filtered by status / quality / agent stay index-ordered by seq (no sort of the matches)
SCHEMA_V2 = """
CREATE INDEX IF NOT EXISTS traj_status_seq ON trajectories(status, seq);
CREATE INDEX IF NOT EXISTS traj_quality_seq ON trajectories(quality, seq);
CREATE INDEX IF NOT EXISTS traj_agent_seq ON trajectories(agent, seq);
ANALYZE sqlite_schema;
DELETE FROM sqlite_stat1 WHERE tbl = 'trajectories';
INSERT INTO sqlite_stat1(tbl, idx, stat) VALUES
  ('trajectories', 'traj_group', '1000000 8'),
  ('trajectories', 'traj_exchange', '1000000 1'),
  ('trajectories', 'traj_open', '1000000 300000 1'),
  ('trajectories', 'traj_channel', '1000000 300000 1'),
  ('trajectories', 'traj_status_seq', '1000000 300000 1'),
  ('trajectories', 'traj_quality_seq', '1000000 300000 1'),
  ('trajectories', 'traj_agent_seq', '1000000 50000 1')
"""
# The planner has no statistics on a young database: the rows above tell it that a group id is selective
# and a status is not (else "group_id = ? AND status = ?" would walk every complete trajectory).

# v3: message search through an FTS5 trigram index (case-insensitive substrings) instead of a scan of every
# step's JSON; rowid = steps.seq. Steps already stored are indexed by SqliteStore after this migration.
SCHEMA_V3 = """
CREATE VIRTUAL TABLE IF NOT EXISTS step_text USING fts5(trajectory_id UNINDEXED, text, tokenize = 'trigram')
"""

# v4: a key may be bound to a session (steplake.store.keys): its JSON binding, NULL for an ordinary key.
SCHEMA_V4 = """
ALTER TABLE keys ADD COLUMN binding BLOB
"""

# audit log (steplake.store.audit): who changed the pool as an administrator, what, when, from where.
SCHEMA_AUDIT = """
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at REAL NOT NULL,
  actor TEXT NOT NULL,
  via TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT,
  summary BLOB,
  client TEXT
);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, id);
CREATE INDEX IF NOT EXISTS audit_actor ON audit(actor, id)
"""

# reward claims (steplake.store.claims): which server scores a trajectory with a function version, once
SCHEMA_REWARD_CLAIMS = """
CREATE TABLE IF NOT EXISTS reward_claims (
  trajectory_id TEXT NOT NULL,
  component TEXT NOT NULL,
  version TEXT NOT NULL,
  claimed_by TEXT NOT NULL,
  claimed_at REAL NOT NULL,
  done_at REAL,
  PRIMARY KEY (trajectory_id, component, version)
) WITHOUT ROWID
"""

# the dashboard funnel's counts as counters kept by triggers (store/funnel_sql.py); counted once from the rows
SCHEMA_FUNNEL = sqlite_funnel_migration()
# the funnel's group stages (complete trajectories of ready/leased/consumed groups) as counters kept by triggers too
SCHEMA_FUNNEL_GROUPS = sqlite_counters_migration(GROUP_COUNTS)
# the INSERT and DELETE counter triggers split so a plain new trajectory (or group) costs one UPDATE at most
SCHEMA_LEAN_COUNTERS = sqlite_lean_migration(TRAJECTORY_COUNTS, GROUP_COUNTS)

MIGRATIONS: list[str] = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_AUDIT, SCHEMA_REWARD_CLAIMS, SCHEMA_FUNNEL,
                         SCHEMA_FUNNEL_GROUPS, SCHEMA_LEAN_COUNTERS]
TEXT_INDEX_VERSION = 3  # a database migrated from below this version gets its steps' text indexed
SCHEMA_VERSION = len(MIGRATIONS)

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "TEXT_INDEX_VERSION"]
