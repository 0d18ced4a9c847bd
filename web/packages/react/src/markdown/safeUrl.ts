/**
 * Link targets from model output are untrusted. Only absolute http(s) and
 * mailto URLs become links; everything else (javascript:, data:, vbscript:,
 * file:, relative paths that would hit this app's own API, protocol-relative
 * "//host") renders as plain text.
 */

const ALLOWED_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

// Browsers drop ASCII tab and newline anywhere in a URL and trim C0
// controls and spaces at the ends, so "java\tscript:" is javascript:.
// Remove them before looking at the scheme.
// eslint-disable-next-line no-control-regex
const IGNORED_BY_URL_PARSER = /[\u0000-\u001F\u007F\s]+/g;

export function safeHref(raw: string): string | null {
  const cleaned = raw.replace(IGNORED_BY_URL_PARSER, "");
  if (!/^[a-z][a-z0-9+.-]*:/i.test(cleaned)) return null;
  let url: URL;
  try {
    url = new URL(cleaned);
  } catch {
    return null;
  }
  if (!ALLOWED_PROTOCOLS.has(url.protocol)) return null;
  return url.href;
}
