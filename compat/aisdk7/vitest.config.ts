import { defineConfig } from "vitest/config";
import { shared } from "../vitest.shared.mts";

export default defineConfig(shared);
