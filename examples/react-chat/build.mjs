// npm run build: bundle src/main.tsx with esbuild into dist/ (with index.html and style.css).
// alias: @squall/client and @squall/react are linked from the repository (file:
// dependencies), whose folders may hold their own node_modules (their tests' React): every
// import of React and of the client must resolve to this app's one copy.
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
await copyFile("index.html", "dist/index.html");
await copyFile("style.css", "dist/style.css");
console.log("built dist/app.js");
