// The browser SDK as a page loads it from a <script> tag: esbuild bundles this into
// build/js/sentry-browser.js, an IIFE that sets the global `Sentry` (the npm package ships only
// ESM and CJS builds).
export * from "@sentry/browser";
