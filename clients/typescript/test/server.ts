// Starts the real agentbus binary for the tests: `serve --listen
// 127.0.0.1:PORT`, waits for its one stdout line, stops it with SIGTERM.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { Code, ConnectError } from "../src/index.js";

export const PACKAGE_DIR = resolve(dirname(fileURLToPath(import.meta.url)), "..");

/** `$AGENTBUS_BIN`, else `../../target/debug/agentbus` relative to this package (what `cargo build` makes). */
export const AGENTBUS_BIN = process.env.AGENTBUS_BIN
  ? resolve(process.env.AGENTBUS_BIN)
  : resolve(PACKAGE_DIR, "../../target/debug/agentbus");

export interface ServerOptions {
  /** Port to listen on; 0 (default) picks a free one. */
  port?: number;
  /** SQLite store in this directory; default: the memory store. */
  dataDir?: string;
  apiKey?: string;
  /** More `serve` flags, e.g. ["--ack-timeout", "1s"]. */
  args?: string[];
}

export interface RunningServer {
  /** `127.0.0.1:PORT` */
  address: string;
  port: number;
  process: ChildProcess;
  /** What the server logged, for failure messages. */
  stderr(): string;
  /** SIGTERM and wait for the exit (SIGKILL after 10 s). */
  stop(): Promise<void>;
  /** SIGKILL: the server dies without closing anything. */
  kill(): Promise<void>;
}

/** The server's environment without AGENT_BUS_* settings, so only the flags count. */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("AGENT_BUS_")) env[k] = v;
  return env;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  assert.ok(existsSync(AGENTBUS_BIN), `agentbus binary not found at ${AGENTBUS_BIN}: run cargo build or set AGENTBUS_BIN`);
  const args = ["serve", "--listen", `127.0.0.1:${options.port ?? 0}`];
  args.push(...(options.dataDir !== undefined ? ["--data-dir", options.dataDir] : ["--store", "memory"]));
  if (options.apiKey !== undefined) args.push("--api-key", options.apiKey);
  args.push(...(options.args ?? []));
  const child = spawn(AGENTBUS_BIN, args, { env: serverEnv(), stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolveExit) => child.once("exit", () => resolveExit()));

  const address = await new Promise<string>((resolveAddress, reject) => {
    let stdout = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`agentbus did not print its address within 15 s; stderr:\n${stderr}`));
    }, 15_000);
    child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
      const match = /^agentbus listening on (\S+)$/m.exec(stdout);
      if (match) {
        clearTimeout(timer);
        resolveAddress(match[1]!);
      }
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`agentbus exited (${code ?? signal}) before listening; stderr:\n${stderr}`));
    });
  });
  const port = Number(address.slice(address.lastIndexOf(":") + 1));
  const halt = async (signal: NodeJS.Signals) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  };
  return {
    address,
    port,
    process: child,
    stderr: () => stderr,
    stop: () => halt("SIGTERM"),
    kill: () => halt("SIGKILL"),
  };
}

/** A fresh temporary directory, removed by the returned function. */
export function tempDir(prefix = "agentbus-ts-"): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Asserts that `promise` rejects with a ConnectError of `code` (and a message matching `pattern`). */
export async function rejectsWithCode(promise: Promise<unknown>, code: Code, pattern?: RegExp): Promise<ConnectError> {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    assert.equal(Code[e.code], Code[code], `expected ${Code[code]}, got ${Code[e.code]}: ${e.message}`);
    if (pattern) assert.match(e.rawMessage, pattern);
    return e;
  }
  assert.fail(`expected ${Code[code]}, but the call succeeded`);
}

/** Resolves `promise`, or fails the test after `ms`. */
export async function within<T>(ms: number, promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
