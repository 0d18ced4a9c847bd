/**
 * The answer to a tool call that waits for a person's approval: Approve, or
 * Deny with an optional reason (given to the model), while it is pending;
 * the decision once it is made.
 */
import { memo, useId, useState } from "react";
import type { ApprovalPart } from "@tokenrelay/client";

/** Approve call `callId`. */
export type ApproveHandler = (callId: string) => void;
/** Deny call `callId`; `reason`, when given, goes to the model with the denial. */
export type DenyHandler = (callId: string, reason?: string) => void;

export interface ApprovalControlsProps {
  part: ApprovalPart;
  /** Without handlers a pending call is shown as waiting, with no buttons. */
  onApprove?: ApproveHandler;
  onDeny?: DenyHandler;
}

function expiryText(expiresAt: number | undefined): string | null {
  if (expiresAt === undefined) return null;
  const until = new Date(expiresAt * 1000);
  const today = until.toDateString() === new Date().toDateString();
  const time = today
    ? until.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : until.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
  return `Waits for an answer until ${time}.`;
}

/** How a decided call reads. */
export function decisionText(part: ApprovalPart): string {
  switch (part.state) {
    case "approved":
      return part.sending === true ? "Approving…" : "Approved";
    case "denied": {
      const denied = part.sending === true ? "Denying…" : "Denied";
      return part.reason !== undefined ? `${denied}: ${part.reason}` : denied;
    }
    case "expired":
      return "Not answered in time";
    case "pending":
      return "Waiting for approval";
  }
}

export const ApprovalControls = memo(function ApprovalControls({ part, onApprove, onDeny }: ApprovalControlsProps) {
  const [reason, setReason] = useState("");
  const reasonId = useId();
  const error = part.error !== undefined ? <p className="approval-error">{part.error}</p> : null;
  if (part.state !== "pending" || onApprove === undefined || onDeny === undefined) {
    return (
      <div className="approval" data-state={part.state}>
        <p className="approval-decision">{decisionText(part)}</p>
        {error}
      </div>
    );
  }
  const deny = () => onDeny(part.callId, reason.trim() === "" ? undefined : reason.trim());
  return (
    <div className="approval" data-state="pending" role="group" aria-label={`Approve the call to ${part.name}?`}>
      <p className="approval-ask">
        Run <code>{part.name}</code> with these arguments? {expiryText(part.expiresAt)}
      </p>
      {error}
      <div className="approval-actions">
        <button type="button" className="button" onClick={() => onApprove(part.callId)}>
          Approve
        </button>
        <input
          id={reasonId}
          className="approval-reason"
          aria-label="Reason for denying (optional)"
          placeholder="Reason (optional)"
          value={reason}
          onChange={(event) => setReason(event.target.value)}
          onKeyDown={(event) => {
            if (event.key === "Enter") deny();
          }}
        />
        <button type="button" className="button button-quiet" onClick={deny}>
          Deny
        </button>
      </div>
    </div>
  );
});
