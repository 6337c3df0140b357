# Production image: one process, non-root, health-checked.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml hatch_build.py README.md ./
COPY protos ./protos
COPY projections ./projections
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --create-home --home-dir /var/lib/sessions sessions
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && mkdir -p /var/lib/sessions/data && chown sessions: /var/lib/sessions/data
USER sessions
WORKDIR /var/lib/sessions
ENV SESSIONS_STORE=sqlite:///var/lib/sessions/data/sessions.db
# It listens on a public address, so it needs credentials: make them in the
# volume with `sessions auth add-token` (see README, Security); until the file
# exists the server refuses to start. SIGHUP reloads it.
ENV SESSIONS_AUTH_FILE=/var/lib/sessions/data/credentials.json
VOLUME /var/lib/sessions/data
EXPOSE 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["sessions", "health", "--target", "127.0.0.1:50051"]
STOPSIGNAL SIGTERM
CMD ["sessions", "serve", "--listen", "0.0.0.0:50051"]
