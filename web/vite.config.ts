import { defineConfig } from "vite";

// `npm run dev` serves the UI with hot reload and forwards the API to a running server.
const server = process.env.STABLECORE_URL ?? "http://127.0.0.1:5000";

export default defineConfig({
  server: {
    proxy: {
      "/api": { target: server, ws: true },
      "/openapi.json": server,
    },
  },
  // the node editor (Rete.js and Lit) is its own chunk of about 225 kB, loaded on demand
  build: { target: "es2022", chunkSizeWarningLimit: 240 },
});
