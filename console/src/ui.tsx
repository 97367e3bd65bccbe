// Small shared pieces: copy buttons, errors, timestamps, sizes.
import type { ComponentChildren } from "preact";
import { useState } from "preact/hooks";
import { api, explain, session } from "./session";
import { SCOPES } from "./types";

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [state, setState] = useState<"idle" | "copied" | "failed">("idle");
  return (
    <button
      type="button"
      class="secondary small"
      onClick={async () => {
        try {
          // Only in a secure context (https, or localhost): elsewhere, select and copy by hand.
          await navigator.clipboard.writeText(text);
          setState("copied");
        } catch {
          setState("failed");
        }
        setTimeout(() => setState("idle"), 2000);
      }}
    >
      {state === "copied" ? "Copied" : state === "failed" ? "Select it and copy" : label}
    </button>
  );
}

/// A value shown once, with its copy button.
export function Secret({ label, value }: { label: string; value: string }) {
  return (
    <div class="secret">
      <span class="label">{label}</span>
      <code data-secret={label}>{value}</code>
      <CopyButton text={value} />
    </div>
  );
}

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <p class="error" role="alert">
      {explain(error)}
    </p>
  );
}

export function Empty({ children }: { children: ComponentChildren }) {
  return <p class="empty">{children}</p>;
}

export function time(value: string | Date | undefined | null): string {
  if (!value) return "never";
  const date = typeof value === "string" ? new Date(value) : value;
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function size(bytes: number | bigint): string {
  const n = Number(bytes);
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function refOf(event: { branch?: string | null; tag?: string | null }): string {
  if (event.branch) return event.branch;
  if (event.tag) return `tag ${event.tag}`;
  return "";
}

/// "Delete" with a confirmation: DELETE `path`, then `onDeleted`; a failure goes to `onError`.
/** Checkboxes for the scopes to grant: only those the session holds itself. */
export function ScopePicker(props: { scopes: string[]; onChange: (scopes: string[]) => void }) {
  const own = session()?.scopes ?? [];
  return (
    <fieldset>
      <legend>Scopes</legend>
      {SCOPES.map((scope) => (
        <label class="check" key={scope}>
          <input
            type="checkbox"
            name={scope}
            disabled={!own.includes(scope)}
            checked={props.scopes.includes(scope)}
            onChange={(e) =>
              props.onChange(e.currentTarget.checked ? [...props.scopes, scope] : props.scopes.filter((s) => s !== scope))
            }
          />
          {scope}
        </label>
      ))}
    </fieldset>
  );
}

export function DeleteButton(props: {
  path: string;
  confirm: string;
  onDeleted: () => void;
  onError: (error: unknown) => void;
}) {
  return (
    <button
      type="button"
      class="danger small"
      onClick={async () => {
        if (!window.confirm(props.confirm)) return;
        props.onError(null);
        try {
          await api("DELETE", props.path);
          props.onDeleted();
        } catch (err) {
          props.onError(err);
        }
      }}
    >
      Delete
    </button>
  );
}
