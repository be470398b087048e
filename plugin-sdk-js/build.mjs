#!/usr/bin/env node
// Builds the plugin in the current directory into a WebAssembly component: bundles the
// module named by package.json's "main" (default `src/plugin.ts`) with the SDK's exports
// (esbuild), then makes the bundle a component of hookwasm:plugin@0.2.0 (componentize-js).
// Prints the component's path, `target/hookwasm/NAME.wasm`, and nothing else on stdout.

import { mkdir, readFile, realpath, writeFile } from "node:fs/promises";
import { basename, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { componentize } from "@bytecodealliance/componentize-js";
import { build } from "esbuild";

const dir = resolve(process.argv[2] ?? ".");
const manifest = JSON.parse(await readFile(resolve(dir, "package.json"), "utf8"));
const name = basename(manifest.name ?? dir);
const entry = resolve(dir, manifest.main ?? "src/plugin.ts");
const out = resolve(dir, "target/hookwasm");
await mkdir(out, { recursive: true });

const bundled = await build({
  stdin: {
    contents: [
      `import * as plugin from ${JSON.stringify(entry)};`,
      `import { exportPlugin } from "@hookwasm/plugin-sdk/component";`,
      `export const { transform, checkConfig } = exportPlugin(plugin);`,
    ].join("\n"),
    resolveDir: dir,
    loader: "ts",
  },
  bundle: true,
  format: "esm",
  platform: "neutral",
  target: "es2022",
  write: false,
  logLevel: "warning",
});
const source = resolve(out, `${name}.js`);
await writeFile(source, bundled.outputFiles[0].contents);

// No HTTP: the sandbox has no network, and leaving it out keeps the component smaller.
const { component } = await componentize({
  sourcePath: source,
  // The real path: componentize-js's WASI sandbox does not follow a symlinked `wit`.
  witPath: await realpath(fileURLToPath(new URL("./wit", import.meta.url))),
  worldName: "transformer",
  disableFeatures: ["http", "fetch-event"],
});
const path = resolve(out, `${name}.wasm`);
await writeFile(path, component);
console.log(path);
