// The gRPC-Web client for the live views. hookrelay answers gRPC-Web on the
// console's own origin (its HTTP listener, or Envoy's single port), so no CORS.
import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { EventService } from "./gen/hookrelay/v1/events_pb";
import { session } from "./session";

const bearer: Interceptor = (next) => (request) => {
  const current = session();
  if (current) request.header.set("authorization", `Bearer ${current.token}`);
  return next(request);
};

export const events = createClient(
  EventService,
  createGrpcWebTransport({ baseUrl: window.location.origin, interceptors: [bearer] }),
);

/// Runs `watch` until `signal` aborts, reconnecting after a pause when the
/// stream ends (a server restart, a token renewal, a network blip).
export async function keepWatching(
  watch: (signal: AbortSignal) => Promise<void>,
  signal: AbortSignal,
  onState: (connected: boolean) => void,
): Promise<void> {
  while (!signal.aborted) {
    try {
      onState(true);
      await watch(signal);
    } catch {
      // Ends below: reconnect unless aborted.
    }
    if (signal.aborted) return;
    onState(false);
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}
