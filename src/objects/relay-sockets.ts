// What a holder does with the frames of the relay's own protocol (docs/protocol.md): publish,
// direct, ack, and on user sockets subscribe and unsubscribe. Pusher clients' frames are
// pusher-sockets.ts; the holder owns the sockets, rooms and subscriptions both use.
import { roomAllowed } from "../identity";
import { log } from "../log";
import {
  ackFrame,
  errorFrame,
  FrameError,
  subscribedFrame,
  unsubscribedFrame,
  type ClientFrame,
  type Delivery,
  type Json,
  type Refusal,
  type ResumePoint,
  type ServerFrame,
} from "../protocol";
import { admitted, type Admission } from "./feed";
import type { Batches, Links } from "./links";
import type { Session } from "./session";

/** A direct on its way to the recipient's inbox. */
export interface Direct {
  from: string;
  data: Json;
  id?: string;
}

/** What the holder lends this module. */
export interface RelayHost {
  name: string;
  links: Links;
  /** Directs to each inbox, batched (links.ts `Batches`). */
  directs: Batches<Direct, Delivery | Refusal>;
  send(session: Session, frame: ServerFrame | string): void;
  /** Publishes `session`'s message into `room`; answers its seq once stored. */
  publishTo(session: Session, room: string, data: Json, id?: string): Promise<number>;
  /** `answer` settles once it has sent a frame's answer: a socket closed for flooding waits for it (owed.ts). */
  answering(session: Session, answer: Promise<unknown>): void;
  /** A publish to `room` was answered `seq`: the echo the socket gets of it is owed too (owed.ts). */
  oweEcho(session: Session, room: string, seq: number): void;
  subscribe(session: Session, room: string, resume: ResumePoint, answer: (admission: Admission) => void): Promise<void>;
  unsubscribe(session: Session, room: string): Promise<boolean>;
}

export class RelaySockets {
  readonly #host: RelayHost;

  constructor(host: RelayHost) {
    this.#host = host;
  }

  /** `size`: the frame's length in characters, close to what a direct carries on to the inbox. */
  async onFrame(session: Session, frame: ClientFrame, size: number): Promise<void> {
    const host = this.#host;
    const { user } = session.identity;
    switch (frame.type) {
      case "publish":
        return this.#publish(session, frame.data, frame.room, frame.id);
      case "direct":
        return this.#direct(session, frame, size);
      case "ack":
        if (session.room !== undefined) throw new FrameError("bad_frame", `"ack" is only meaningful on a user socket`);
        host.links.call("inbox", user, (stub) => stub.ack(frame.seq)).catch((error: unknown) => log("error", "could not ack directs", { user, error }));
        return;
      case "subscribe": {
        if (session.room !== undefined) throw new FrameError("bad_frame", `"subscribe" is only meaningful on a user socket`);
        const { room, id } = frame;
        if (!roomAllowed(session.identity.rooms, room)) throw new FrameError("forbidden", `token does not allow room ${room}`);
        return host.subscribe(session, room, frame, (admission) => host.send(session, subscribedFrame({ room, ...admitted(admission) }, id)));
      }
      case "unsubscribe":
        if (session.room !== undefined) throw new FrameError("bad_frame", `"unsubscribe" is only meaningful on a user socket`);
        await host.unsubscribe(session, frame.room);
        return host.send(session, unsubscribedFrame(frame.room, frame.id));
    }
  }

  #publish(session: Session, data: Json, named: string | undefined, id: string | undefined): void {
    const room = session.room ?? named;
    if (room === undefined) throw new FrameError("bad_frame", `"publish" on a user socket needs a "room"`);
    if (session.room !== undefined && named !== undefined && named !== session.room) {
      throw new FrameError("bad_frame", `this socket is in room ${session.room}; publish to other rooms from a user socket`);
    }
    if (session.room === undefined && !roomAllowed(session.identity.rooms, room)) {
      throw new FrameError("forbidden", `token does not allow room ${room}`);
    }
    // Not awaited: a socket's publishes go out back to back (in order, on one stub or into one
    // log) and each is answered when its batch is stored.
    const answer = this.#host.publishTo(session, room, data, id).then(
      // Room sockets see their own message echoed; user sockets are also told its seq.
      (seq) => {
        this.#host.oweEcho(session, room, seq);
        if (session.room === undefined && id !== undefined) this.#host.send(session, ackFrame(id, "delivered", seq));
      },
      (error: unknown) => {
        const refusal = error instanceof FrameError ? error : new FrameError("internal", "the relay failed to handle this frame");
        this.#host.send(session, errorFrame(refusal.code, refusal.message, id));
      },
    );
    this.#host.answering(session, answer);
  }

  async #direct(session: Session, { to, data, id }: { to: string; data: Json; id?: string }, size: number): Promise<void> {
    const host = this.#host;
    try {
      const result = await host.directs.push(to, { from: session.identity.user, data, ...(id !== undefined && { id }) }, size);
      host.send(session, "refused" in result ? errorFrame(result.refused, result.message, id) : ackFrame(id, result.status, result.seq));
    } catch (error) {
      log("error", "direct delivery failed", { holder: host.name, to, error });
      host.send(session, errorFrame("internal", `could not deliver to ${to}; not sent`, id));
    }
  }
}
