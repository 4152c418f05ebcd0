// Shared by the examples: where the bus is and which key to use.
//   address: first argument, else $AGENT_BUS_URL, else 127.0.0.1:8080
//   API key: $AGENT_BUS_API_KEY (optional)
// Outside this repository, import from "@agentbus/client" instead of "../src/index.js".
import { connect, type AgentBusClient } from "../src/index.js";

export function busFromEnv(): AgentBusClient {
  const address = process.argv[2] ?? process.env.AGENT_BUS_URL ?? "127.0.0.1:8080";
  return connect(address, { apiKey: process.env.AGENT_BUS_API_KEY || undefined });
}

/** `sess_<project>_<timestamp>`, as the tutorial suggests, unique per run. */
export function sessionName(project: string): string {
  const stamp = new Date().toISOString().replace(/[-:.TZ]/g, "");
  return `sess_${project}_${stamp}_${Math.random().toString(16).slice(2, 8)}`;
}

/** Runs `main`, printing a failure (with its gRPC code) and exiting non-zero; gives up after `limitMs`. */
export function run(main: () => Promise<void>, limitMs = 30_000): void {
  const timer = setTimeout(() => {
    console.error(`gave up after ${limitMs} ms`);
    process.exit(1);
  }, limitMs);
  timer.unref();
  main().then(
    () => clearTimeout(timer),
    (error: unknown) => {
      console.error("failed:", error instanceof Error ? error.message : error);
      process.exitCode = 1;
      clearTimeout(timer);
    },
  );
}
