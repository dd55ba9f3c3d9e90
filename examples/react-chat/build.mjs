// npm run build: bundle src/main.tsx with esbuild into dist/ (with index.html and style.css).
// alias: @squall/client and @squall/react are linked from the repository (file:
// dependencies), whose folders may hold their own node_modules (their tests' React): every
// import of React and of the client must resolve to this app's one copy.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

import { join } from "node:path";

// NODE_ENV=development: React's development build (StrictMode's double effects run there).
const production = process.env.NODE_ENV !== "development";
const out = process.env.OUT_DIR || "dist";
await mkdir(out, { recursive: true });
await build({
  entryPoints: ["src/main.tsx"],
  bundle: true,
  format: "esm",
  outfile: join(out, "app.js"),
  jsx: "automatic",
  alias: {
    react: "./node_modules/react",
    "react-dom": "./node_modules/react-dom",
    "@squall/client": "./node_modules/@squall/client",
  },
  minify: production,
  sourcemap: true,
  target: ["es2022"],
  define: { "process.env.NODE_ENV": JSON.stringify(production ? "production" : "development") },
  logLevel: "warning",
});
await copyFile("index.html", join(out, "index.html"));
await copyFile("style.css", join(out, "style.css"));
console.log(`built ${join(out, "app.js")}`);
