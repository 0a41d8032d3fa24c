/**
 * Event orders presence must get right, run against every keeper (the in-memory tracker and both
 * store backends). Each step is a connected (C) or disconnected (D) of connection `conn` at time
 * `at`, with the client's expected online state after it. Every case runs twice: with EMQX >= 5.4
 * peer ports (each connection its own port) and without (peerport 0 before 5.4: all connections
 * from one host to one listener look alike).
 */
import { connectionOf, type Connection } from "../../src/connection";

export interface PresenceStep {
  readonly ev: "C" | "D";
  /** Which connection (1, 2, ...): its peer port with peer ports, 0 without. */
  readonly conn: number;
  readonly at: number;
  /** Online after this step. */
  readonly online: boolean;
  /** Live connections after this step (checked when given). */
  readonly connections?: number;
}

export interface PresenceCase {
  readonly name: string;
  readonly steps: readonly PresenceStep[];
}

const step = (ev: "C" | "D", conn: number, at: number, online: boolean, connections?: number): PresenceStep => ({
  ev,
  conn,
  at,
  online,
  ...(connections !== undefined ? { connections } : {}),
});

export const REORDER_WINDOW_MS = 30_000;

export const PRESENCE_CASES: readonly PresenceCase[] = [
  { name: "connect, disconnect", steps: [step("C", 1, 1000, true, 1), step("D", 1, 2000, false, 0)] },
  {
    name: "quick reconnect: disconnect, connect again 2 s later",
    steps: [step("C", 1, 1000, true), step("D", 1, 5000, false), step("C", 2, 7000, true, 1), step("D", 2, 9000, false)],
  },
  {
    name: "three quick reconnects in a row",
    steps: [
      step("C", 1, 1000, true),
      step("D", 1, 1100, false),
      step("C", 2, 1200, true),
      step("D", 2, 1300, false),
      step("C", 3, 1400, true, 1),
    ],
  },
  {
    name: "takeover: the new connected before the old disconnected",
    steps: [step("C", 1, 1000, true, 1), step("C", 2, 2000, true, 2), step("D", 1, 2001, true, 1), step("D", 2, 3000, false, 0)],
  },
  {
    name: "takeover: the old disconnected before the new connected",
    steps: [step("C", 1, 1000, true), step("D", 1, 2000, false), step("C", 2, 2001, true, 1)],
  },
  {
    name: "a disconnect before its own connect: the late connect does not bring it back",
    steps: [step("D", 1, 5000, false), step("C", 1, 5001, false, 0)],
  },
  {
    name: "quick reconnect whose second connection's events arrive swapped",
    steps: [
      step("C", 1, 1000, true),
      step("D", 1, 2000, false),
      step("D", 2, 4000, false),
      step("C", 2, 4001, false, 0),
      step("C", 3, 6000, true, 1),
    ],
  },
  {
    name: "a disconnect whose connect never came is forgotten after the reorder window",
    steps: [step("D", 1, 1000, false), step("C", 2, 1000 + REORDER_WINDOW_MS + 1, true, 1)],
  },
];

/** The connection of step `conn` in a case, with or without peer ports. */
export function caseConnection(clientId: string, conn: number, withPeerport: boolean): Connection {
  return connectionOf({
    clientid: clientId,
    node: "emqx@n1",
    username: "u",
    peerhost: "10.0.0.9",
    peerport: withPeerport ? 40_000 + conn : 0,
    sockport: 1883,
    protocol: "mqtt",
  });
}
