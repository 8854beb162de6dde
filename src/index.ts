// Worker entry: the Hono app routes every request; the object classes are exported for bindings.
import { app } from "./routes";

export { Directory } from "./objects/directory";
export { Holder } from "./objects/holder";
export { Inbox } from "./objects/inbox";
export { Room } from "./objects/room";

export default {
  fetch: app.fetch,
} satisfies ExportedHandler<Env>;
