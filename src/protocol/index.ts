export * from "./codes";
export * from "./decode";
export * from "./encode";
export * from "./frames";
export * from "./names";
export * from "./pusher";
export * from "./pusher-events";
