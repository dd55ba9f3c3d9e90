// npm run build: bundle src/main.tsx with esbuild into dist/ (with index.html and style.css).
// preserveSymlinks: @squall/client and @squall/react are linked from the repository
// (file: dependencies); their imports of "react" must resolve to this app's one React.
import { build } from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";

const production = process.env.NODE_ENV !== "development";
await mkdir("dist", { recursive: true });
await build({
  entryPoints: ["src/main.tsx"],
  bundle: true,
  format: "esm",
  outfile: "dist/app.js",
  jsx: "automatic",
  preserveSymlinks: true,
  minify: production,
  sourcemap: true,
  target: ["es2022"],
  define: { "process.env.NODE_ENV": JSON.stringify(production ? "production" : "development") },
  logLevel: "warning",
});
await copyFile("index.html", "dist/index.html");
await copyFile("style.css", "dist/style.css");
console.log("built dist/app.js");
