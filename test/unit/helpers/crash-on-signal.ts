// Preloaded into an agent process by tests (--import): on SIGUSR2 the agent
// meets an error nothing catches, the kind MEMOH_TEST_CRASH names:
// "exception" (thrown from a callback) or "rejection" (a promise nobody awaits).
process.on("SIGUSR2", () => {
  if (process.env.MEMOH_TEST_CRASH === "rejection") {
    void Promise.reject(new Error("injected unhandled rejection"));
  } else {
    setImmediate(() => {
      throw new Error("injected uncaught exception");
    });
  }
});
