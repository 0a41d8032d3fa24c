/**
 * `emqx-exhook/testing`: test a provider without EMQX and without a port. An in-memory client per
 * wire package, fixture builders with EMQX-like contents, a fake EMQX that drives realistic hook
 * sequences and applies EMQX's rules to the answers, and (for real-socket tests) an HTTP/2 client
 * that calls like EMQX. See docs/testing.md.
 */
export {
  FAKE_NODE,
  fakeMessageId,
  nextPeerPort,
  fakeMeta,
  fakeBrokerInfo,
  fakeClientInfo,
  fakeConnInfo,
  connInfoOf,
  fakeMessage,
  fakeAuthenticateRequest,
  fakeAuthorizeRequest,
  fakePublishRequest,
} from "./fixtures.js";
export type { FakeMessageInit } from "./fixtures.js";
export { createMemoryClient, memoryTransport, encodeRequestFor, decodeAnswer, requestSchemaFor, rpcFor } from "./memory-client.js";
export type {
  MemoryClient,
  MemoryClientOptions,
  MemoryReply,
  ExhookTransport,
  RawAnswer,
  ProviderOrDispatcher,
  MemoryTransportOptions,
} from "./memory-client.js";
export { createFakeEmqx, socketTransport, formatGrpcTimeout, FakeEmqxLoadError } from "./fake-emqx.js";
export type {
  FakeEmqx,
  FakeEmqxOptions,
  ConnectOptions,
  ConnectResult,
  SubscribeResult,
  PublishResult,
  ReceivedMessage,
  FakeCall,
} from "./fake-emqx.js";
export { createEmqxLikeClient } from "./emqx-client.js";
export type { EmqxLikeClient, RawReply, RawCallOptions } from "./emqx-client.js";
