/**
 * One MQTT connection as EMQX describes it, and the one identity every module uses for it (the
 * per-client context, the in-memory presence tracker and the stored presence of the use cases).
 *
 * EMQX sends no connection id. What tells two connections of one client id apart is where they
 * come from: the EMQX node, the peer address and port, and the listener port. `peerport` is only
 * sent from EMQX 5.4 on (0 before), so on older brokers two connections of one client id from one
 * host to one listener have the same identity; the modules using it count connections per identity
 * instead of assuming one, so a takeover or a quick reconnect from the same host stays right.
 * Pure: no I/O, no `node:` imports.
 */

/** An MQTT connection: who (client id, username), where (node, peer, listener) and how (protocol). */
export interface Connection {
  readonly clientId: string;
  /** EMQX node the connection is on. */
  readonly node: string;
  readonly username: string;
  readonly peerhost: string;
  /** 0 before EMQX 5.4 (not sent). */
  readonly peerport: number;
  /** Listener port. */
  readonly sockport: number;
  /** `mqtt`, `mqtt-sn`, ... ("" when the request did not say). */
  readonly protocol: string;
}

/** What a `ClientInfo` or `ConnInfo` of a request carries about its connection (protobuf field names). */
export interface ConnectionFields {
  readonly clientid: string;
  readonly node?: string;
  readonly username?: string;
  readonly peerhost?: string;
  readonly peerport?: number;
  readonly sockport?: number;
  readonly protocol?: string;
}

/**
 * The connection of a request's `ClientInfo` / `ConnInfo`. `node` falls back to `fallbackNode`
 * (the request meta's node) for brokers that leave `ClientInfo.node` empty.
 */
export function connectionOf(info: ConnectionFields | undefined, fallbackNode = ""): Connection {
  return {
    clientId: info?.clientid ?? "",
    node: info?.node || fallbackNode,
    username: info?.username ?? "",
    peerhost: info?.peerhost ?? "",
    peerport: info?.peerport ?? 0,
    sockport: info?.sockport ?? 0,
    protocol: info?.protocol ?? "",
  };
}

/**
 * The identity of a connection within its client id: `node|peerhost|peerport|sockport`. Stored
 * presence rows are keyed by it too (with the client id), so the format is part of the data.
 */
export function connectionKey(c: {
  readonly node?: string;
  readonly peerhost?: string;
  readonly peerport?: number;
  readonly sockport?: number;
}): string {
  return `${c.node ?? ""}|${c.peerhost ?? ""}|${c.peerport ?? 0}|${c.sockport ?? 0}`;
}
