import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { Clients } from "./pages/clients";
import { Consumers } from "./pages/consumers";
import { Device, deviceRouteFromPath } from "./pages/device";
import { Event } from "./pages/event";
import { Events } from "./pages/events";
import { Failed } from "./pages/failed";
import { SignIn, SignUp } from "./pages/auth";
import { Recovery } from "./pages/recovery";
import { Repositories } from "./pages/repositories";
import { TrustedIssuers } from "./pages/trusted-issuers";
import { UsagePage } from "./pages/usage";
import { navigate, useRoute } from "./router";
import { onSessionChange, session, signOut } from "./session";
import "./style.css";

const PAGES = [
  ["events", "Events"],
  ["repositories", "Repositories"],
  ["consumers", "Consumers"],
  ["failed", "Failed deliveries"],
  ["clients", "Clients"],
  ["trusted-issuers", "Trusted issuers"],
  ["usage", "Usage"],
] as const;

function App() {
  const route = useRoute();
  const [, setVersion] = useState(0);
  useEffect(() => onSessionChange(() => setVersion((v) => v + 1)), []);
  const current = session();
  if (!current) {
    return route[0] === "signup" ? <SignUp /> : <SignIn />;
  }
  const page = route[0] ?? "events";
  return (
    <>
      <header>
        <a class="brand" href="#/events">
          hookrelay
        </a>
        <nav aria-label="Main">
          {PAGES.map(([path, label]) => (
            <a key={path} href={`#/${path}`} aria-current={page === path ? "page" : undefined}>
              {label}
            </a>
          ))}
        </nav>
        <span class="who" title={`tenant ${current.tenantId}, client ${current.clientId}`}>
          tenant <code>{current.tenantId.slice(0, 8)}</code>
        </span>
        <button
          type="button"
          class="secondary small"
          onClick={() => {
            signOut();
            navigate("/signin");
          }}
        >
          Sign out
        </button>
      </header>
      <main>
        {page === "events" && route[1] ? <Event id={route[1]} /> : null}
        {page === "events" && !route[1] ? <Events /> : null}
        {page === "repositories" && route[1] ? <Recovery id={route[1]} /> : null}
        {page === "repositories" && !route[1] ? <Repositories /> : null}
        {page === "consumers" && <Consumers />}
        {page === "failed" && <Failed />}
        {page === "clients" && <Clients />}
        {page === "trusted-issuers" && <TrustedIssuers />}
        {page === "usage" && <UsagePage />}
        {page === "device" && <Device code={route[1]} />}
        {page === "signin" || page === "signup" ? <Events /> : null}
      </main>
    </>
  );
}

/// Each table cell gets its column's name (data-label), which the phone layout
/// (style.css) shows in front of it, for every page's tables at once.
function labelCells(root: HTMLElement): void {
  const label = () => {
    for (const table of root.querySelectorAll("table")) {
      const names = [...table.querySelectorAll("thead th")].map((th) => th.textContent?.trim() ?? "");
      for (const row of table.querySelectorAll("tbody tr")) {
        [...row.children].forEach((cell, i) => {
          const name = names[i] ?? "";
          if (cell.getAttribute("data-label") !== name) cell.setAttribute("data-label", name);
        });
      }
    }
  };
  new MutationObserver(label).observe(root, { childList: true, subtree: true });
  label();
}

deviceRouteFromPath();
const app = document.getElementById("app")!;
render(<App />, app);
labelCells(app);
