import type { Migration } from '../runtime/contracts/index.js';

/** The rollout engine's tables, states and the shapes it reports (status, events to the cloud). */

export const rolloutMigrations: readonly Migration[] = [
  {
    version: 2,
    sql: `
    -- Child devices the update server has seen (poll or attributes), with their attributes.
    CREATE TABLE ota_devices (
      device TEXT PRIMARY KEY,
      first_seen INTEGER NOT NULL,
      last_seen INTEGER NOT NULL,
      attributes TEXT NOT NULL DEFAULT '{}'
    );
    -- running | paused | halted | aborted | done
    CREATE TABLE ota_rollouts (
      release TEXT PRIMARY KEY,
      state TEXT NOT NULL,
      phase INTEGER NOT NULL,
      -- when the current phase's devices all finished (its wait runs from here)
      phase_done_at INTEGER,
      started_at INTEGER NOT NULL,
      updated_at INTEGER NOT NULL,
      detail TEXT,
      -- issue time of the last cloud command applied (a retained command applies once)
      command_at INTEGER
    );
    -- One row per device and release: its phase, where it stands, attempts so far.
    -- state: waiting (phase not reached) | pending | offered | proceeding | success | failed
    --        | canceling | canceled
    CREATE TABLE ota_targets (
      release TEXT NOT NULL,
      device TEXT NOT NULL,
      phase INTEGER NOT NULL,
      state TEXT NOT NULL,
      attempts INTEGER NOT NULL DEFAULT 0,
      action_id INTEGER,
      artifact TEXT,
      updated_at INTEGER NOT NULL,
      detail TEXT,
      PRIMARY KEY (release, device)
    );
    CREATE UNIQUE INDEX ota_targets_by_action ON ota_targets (action_id);
    CREATE TABLE ota_action_seq (n INTEGER NOT NULL);
    INSERT INTO ota_action_seq (n) VALUES (0);`,
  },
  {
    version: 3,
    sql: `
    -- Failures of the current phase an operator accepted by resuming a halted rollout.
    ALTER TABLE ota_rollouts ADD COLUMN accepted_failures INTEGER NOT NULL DEFAULT 0;
    -- A pause or resume for a release whose rollout has not started (its artifacts are still
    -- downloading): applied when it starts.
    CREATE TABLE ota_commands (release TEXT PRIMARY KEY, action TEXT NOT NULL, at INTEGER);`,
  },
  {
    version: 4,
    sql: `
    -- A device's targets, for every poll and every artifact request of it (the primary key leads
    -- with the release: without this, each was a scan of every release's targets).
    CREATE INDEX ota_targets_by_device ON ota_targets (device, state);`,
  },
];

export type RolloutState = 'running' | 'paused' | 'halted' | 'aborted' | 'expired' | 'done';
export type TargetState = 'waiting' | 'pending' | 'offered' | 'proceeding' | 'success' | 'failed' | 'canceling' | 'canceled';

export interface TargetRow {
  release: string;
  device: string;
  phase: number;
  state: TargetState;
  attempts: number;
  action_id: number | null;
  artifact: string | null;
}

export interface PhaseStatus {
  readonly share: number;
  readonly devices: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly active: number;
}

export interface RolloutStatus {
  readonly release: string;
  readonly version: string;
  readonly state: RolloutState;
  readonly phase: number;
  readonly detail: string | undefined;
  readonly phases: readonly PhaseStatus[];
}

/** What the rollout reports to the cloud (through the outbox). */
export interface OtaEvent {
  readonly release: string;
  readonly device?: string | undefined;
  readonly actionId?: number | undefined;
  /** DDI execution for device feedback; for the rollout itself: started, phase, halted, paused, resumed, aborted, expired, done. */
  readonly event: string;
  readonly result?: string | undefined;
  readonly details?: readonly string[] | undefined;
}

export const ACTIVE: readonly TargetState[] = ['offered', 'proceeding'];
export const FINISHED: readonly TargetState[] = ['success', 'failed', 'canceled'];
