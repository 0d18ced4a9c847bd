/**
 * What a line is, for the block parser (blocks.ts): the regular expressions
 * and recognisers for fences, headings, breaks, quotes, list markers and
 * table rows. Pure functions of one line (or two, for a table's start).
 */
import type { Align } from "./tree.js";

const FENCE_OPEN = /^( {0,3})(`{3,}|~{3,})(.*)$/;
export const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*$/;
export const THEMATIC_BREAK = /^ {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$/;
export const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^( {0,3})([-+*]|\d{1,9}[.)])(?=[ \t]|$)([ \t]*)(.*)$/;
const TABLE_DELIMITER = /^ {0,3}\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$/;

export interface ListMarker {
  ordered: boolean;
  /** "-", "+", "*", "." or ")": items of one list share it. */
  kind: string;
  start: number;
  /** Column where the item's content starts: continuation lines are indented this far. */
  contentOffset: number;
  content: string;
}

export function isBlank(line: string): boolean {
  return line.trim() === "";
}

export function leadingSpaces(line: string): number {
  let count = 0;
  while (count < line.length && line.charCodeAt(count) === 0x20) count += 1;
  return count;
}

export function matchListItem(line: string): ListMarker | null {
  const match = LIST_ITEM.exec(line);
  if (match === null) return null;
  const indent = (match[1] ?? "").length;
  const marker = match[2] ?? "";
  const spaces = (match[3] ?? "").length;
  const content = match[4] ?? "";
  const ordered = /\d/.test(marker);
  // 1-4 spaces after the marker set the content column; more means the
  // content is itself indented, and the column is marker + 1.
  const gap = content === "" || spaces > 4 ? 1 : spaces;
  return {
    ordered,
    kind: ordered ? marker.slice(-1) : marker,
    start: ordered ? parseInt(marker, 10) : 1,
    contentOffset: indent + marker.length + gap,
    content: spaces > 4 ? " ".repeat(spaces - 1) + content : content,
  };
}

export function fenceOpen(line: string): { indent: number; fence: string; info: string } | null {
  const match = FENCE_OPEN.exec(line);
  if (match === null) return null;
  const fence = match[2] ?? "";
  const info = (match[3] ?? "").trim();
  // A backtick fence's info string cannot contain backticks (it would be inline code).
  if (fence.startsWith("`") && info.includes("`")) return null;
  return { indent: (match[1] ?? "").length, fence, info };
}

export function isFenceClose(line: string, fence: string): boolean {
  const trimmed = line.trim();
  if (leadingSpaces(line) > 3 || trimmed.length < fence.length) return false;
  const char = fence.charAt(0);
  for (let index = 0; index < trimmed.length; index += 1) {
    if (trimmed.charAt(index) !== char) return false;
  }
  return true;
}

/** Lines that end a paragraph without a blank line before them. */
export function interruptsParagraph(line: string): boolean {
  if (THEMATIC_BREAK.test(line) || HEADING.test(line) || QUOTE.test(line) || fenceOpen(line) !== null) return true;
  const item = matchListItem(line);
  // As in CommonMark: an empty item, or an ordered one not starting at 1, does not interrupt.
  return item !== null && item.content.trim() !== "" && (!item.ordered || item.start === 1);
}

/** Split a table row on unescaped pipes, dropping the optional outer pipes. */
export function splitRow(line: string): string[] {
  let text = line.trim();
  if (text.startsWith("|")) text = text.slice(1);
  if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
  const cells: string[] = [];
  let current = "";
  for (let index = 0; index < text.length; index += 1) {
    const char = text.charAt(index);
    if (char === "\\" && text.charAt(index + 1) === "|") {
      current += "|";
      index += 1;
    } else if (char === "|") {
      cells.push(current.trim());
      current = "";
    } else {
      current += char;
    }
  }
  cells.push(current.trim());
  return cells;
}

export function tableStartsAt(lines: string[], index: number): boolean {
  const header = lines[index];
  const delimiter = lines[index + 1];
  if (header === undefined || delimiter === undefined) return false;
  if (!header.includes("|") || !TABLE_DELIMITER.test(delimiter)) return false;
  return splitRow(header).length === splitRow(delimiter).length;
}

export function alignment(cell: string): Align {
  const left = cell.startsWith(":");
  const right = cell.endsWith(":");
  if (left && right) return "center";
  if (right) return "right";
  if (left) return "left";
  return null;
}

/** Whether two markers belong to one list (the same kind of marker). */
export function sameList(marker: ListMarker, first: ListMarker): boolean {
  return marker.ordered === first.ordered && marker.kind === first.kind;
}
