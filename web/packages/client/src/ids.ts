/**
 * Unique ids for messages. `Date.now()` collides when two messages are
 * created in the same millisecond (a user message and its assistant
 * placeholder always are), so use random UUIDs.
 *
 * `crypto.randomUUID` exists only in secure contexts (https, localhost): a
 * page opened over plain http on a LAN address has `crypto.getRandomValues`
 * but not `randomUUID`, hence the fallbacks.
 */

let counter = 0;

function uuidFromRandomValues(cryptoObject: Crypto): string {
  const bytes = cryptoObject.getRandomValues(new Uint8Array(16));
  // RFC 9562 version 4 / variant 10xx bits.
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40;
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

export function createId(): string {
  const cryptoObject = globalThis.crypto as Crypto | undefined;
  if (cryptoObject !== undefined) {
    if (typeof cryptoObject.randomUUID === "function") return cryptoObject.randomUUID();
    if (typeof cryptoObject.getRandomValues === "function") return uuidFromRandomValues(cryptoObject);
  }
  // Last resort (no Web Crypto at all): unique within this page thanks to the counter.
  counter += 1;
  return `id-${Date.now().toString(36)}-${counter.toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
}
