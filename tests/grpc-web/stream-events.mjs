// Calls hookrelay.v1.EventService over gRPC-Web with Connect's published
// grpc-web transport, using the server's own descriptor set (no codegen):
//   node stream-events.mjs BASE_URL DESCRIPTOR_SET TOKEN CONSUMER COUNT
// Prints ListEvents' first page size and the first COUNT streamed events as JSON.
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

const [baseUrl, descriptorPath, token, consumer, count, repositoryId] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorPath)));
const service = registry.getService("hookrelay.v1.EventService");
const client = createClient(service, createGrpcWebTransport({ baseUrl }));
const headers = { authorization: `Bearer ${token}` };

const page = await client.listEvents({ repositoryId, pageSize: 10 }, { headers });
const events = [];
const abort = new AbortController();
try {
  for await (const event of client.streamEvents({ consumer }, { headers, signal: abort.signal })) {
    events.push({ id: event.id.toString(), deliveryId: event.deliveryId, eventType: event.eventType, bodyLength: event.body.length });
    if (events.length >= Number(count)) {
      abort.abort();
      break;
    }
  }
} catch (error) {
  if (!abort.signal.aborted) throw error;
}
console.log(JSON.stringify({ listed: page.events.length, events }));
