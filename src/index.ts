// Worker entry: WebSocket upgrades to the relay's socket routes go straight to src/sockets.ts,
// the Hono app routes every other request; the object classes are exported for bindings.
import { app } from "./routes";
import { openSocket } from "./sockets";

export { Directory } from "./objects/directory";
export { Holder } from "./objects/holder";
export { Inbox } from "./objects/inbox";
export { Room } from "./objects/room";
export { Webhooks } from "./objects/webhooks";

export default {
  fetch: (request, env, ctx) => openSocket(request, env) ?? app.fetch(request, env, ctx),
} satisfies ExportedHandler<Env>;
