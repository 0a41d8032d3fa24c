# emqx-exhook container image: a multi-stage build (compilers and dev dependencies stay in the
# build stage), a slim runtime running as the unprivileged "node" user.
# Build:  docker build -t emqx-exhook .
# Run:    docker run --rm -p 9000:9000 -p 9100:9100 emqx-exhook
# Your own provider: replace dist/examples/demo-provider.js in CMD (or mount a module and pass it).
# Checked without a Docker engine by scripts/check-docker.sh (`make docker-check`).

FROM node:20-slim AS build
WORKDIR /app
# better-sqlite3 (a dev dependency here, for the tests; an optional peer dependency of the package)
# compiles from source when no prebuilt binary downloads. `npm prune --omit=dev` below drops it: the
# image serves providers that need no store. To serve the use-case stack, keep the driver it uses:
# add `RUN npm install --omit=dev --no-save better-sqlite3@"~12.11"` (or pg) after the prune.
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY proto ./proto
COPY gen ./gen
COPY src ./src
COPY examples ./examples
RUN npx tsc -p tsconfig.build.json
RUN npm prune --omit=dev --no-audit --no-fund

FROM node:20-slim
# METRICS_HOST=0.0.0.0: probes and scrapes reach the operations port from outside the container.
ENV NODE_ENV=production PORT=9000 HOST=0.0.0.0 METRICS_PORT=9100 METRICS_HOST=0.0.0.0 LOG_LEVEL=info
WORKDIR /app
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
USER node
EXPOSE 9000 9100
# Exec form: node is PID 1 and gets SIGTERM directly, so the drain runs on `docker stop`/pod deletion.
CMD ["node", "dist/src/cli.js", "serve", "dist/examples/demo-provider.js", "--drain-timeout", "10000"]
