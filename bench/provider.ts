/** The benchmark's provider (bench/server.ts) as a module for `emqx-exhook serve` (bench/workers.ts). */
import { benchProvider } from "./server.js";

export default benchProvider();
