// Holds one object's answers to an RPC method until `release()`: a test can then act while a
// call is in flight. RPC calls the class's methods, so the class is patched, for that object
// only, until `restore()`. Inside workerd only (cloudflare:test).
import { runInDurableObject } from "cloudflare:test";
import type { TestClient } from "./client";

type Patchable = Record<string, (...args: unknown[]) => unknown> & { ctx: DurableObjectState };

export async function holdCalls(stub: DurableObjectStub, method: string): Promise<{ release: () => void; restore: () => void }> {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => (release = resolve));
  const restore = await runInDurableObject(stub, (instance) => {
    const held = instance as unknown as Patchable;
    const objectClass = Object.getPrototypeOf(held) as Patchable;
    const original = objectClass[method]!;
    const name = held.ctx.id.name;
    objectClass[method] = async function (this: Patchable, ...args: unknown[]) {
      if (this.ctx.id.name === name) await gate;
      return original.apply(this, args);
    };
    return () => void (objectClass[method] = original);
  });
  return { release, restore };
}

/**
 * Floods `client` with `frames` while `held` holds some object's answers, then releases them:
 * answers the socket's close code and every frame it got before its close.
 */
export async function floodWhileHeld(
  client: TestClient,
  frames: object[],
  held: { release: () => void; restore: () => void },
): Promise<{ code: number; received: Record<string, any>[] }> {
  try {
    for (const frame of frames) client.send(frame);
    await new Promise((resolve) => setTimeout(resolve, 300)); // the limit is passed meanwhile
    held.release();
    const { code } = await client.closed;
    return { code, received: client.pending as Record<string, any>[] };
  } finally {
    held.restore();
  }
}
