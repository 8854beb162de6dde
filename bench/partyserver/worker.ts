// A peer baseline: a chat room and a per-user inbox written the way partyserver's README shows,
// with hibernation on. Rooms broadcast every frame to every connection (sender included, as the
// relay does). An inbox reads the "to" of a direct and calls the recipient's server over RPC.
// Routes: /parties/chat/:room and /parties/inbox/:user.
import { getServerByName, routePartykitRequest, Server, type Connection, type WSMessage } from "partyserver";

interface PartyEnv {
  Chat: DurableObjectNamespace<Chat>;
  Inbox: DurableObjectNamespace<Inbox>;
  [binding: string]: unknown;
}

export class Chat extends Server<PartyEnv> {
  static override options = { hibernate: true };

  override onMessage(_connection: Connection, message: WSMessage): void {
    this.broadcast(message);
  }
}

export class Inbox extends Server<PartyEnv> {
  static override options = { hibernate: true };

  override async onMessage(_connection: Connection, message: WSMessage): Promise<void> {
    if (typeof message !== "string") return;
    const to = (JSON.parse(message) as { to?: unknown }).to;
    if (typeof to !== "string") return;
    const stub = await getServerByName(this.env.Inbox, to);
    await stub.deliver(message);
  }

  deliver(message: string): void {
    this.broadcast(message);
  }
}

export default {
  async fetch(request: Request, env: PartyEnv): Promise<Response> {
    return (await routePartykitRequest(request, env)) ?? new Response("not found", { status: 404 });
  },
} satisfies ExportedHandler<PartyEnv>;
