#!/usr/bin/env node
// The `memoh-workspace` command: runs host/cli/main.ts through tsx's loader.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../host/cli/main.ts");
await main();
