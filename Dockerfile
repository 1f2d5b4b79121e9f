# syntax=docker/dockerfile:1
# voicefox-watcher container: a wheel built in one stage, installed into a slim Python image in the next.
#   docker build -t voicefox-watcher .
#   docker run -v ./watcher.toml:/etc/voicefox-watcher/watcher.toml:ro -e VOICEFOX_TOKEN -v vfw-state:/var/lib/voicefox-watcher voicefox-watcher
# The base is a build argument so that it can be a locally built image where no registry is reachable.
ARG PYTHON_IMAGE=python:3.12-slim
# The extras installed: [postgres] (psycopg 3 with its own libpq, ~13 MB) by default, so that one image runs either
# store: SQLite on its volume, or PostgreSQL with replicas (deploy/kubernetes/voicefox-watcher-ha.yaml, the compose
# ha profile), [rules] (cel-python, ~6 MB) so that `[[rules]]` on task values work in the image as documented, and
# [ui] (Jinja2, ~1 MB) for the status page ([http] ui = true).
# --build-arg EXTRAS= for SQLite only, no rules, no page; EXTRAS=postgres,rules,ui,fast adds the aiohttp transport.
ARG EXTRAS=postgres,rules,ui

FROM ${PYTHON_IMAGE} AS build
# Set where pip must trust a local CA (a proxy); unset otherwise.
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml README.md ./
COPY watcher ./watcher
ARG EXTRAS
# Every wheel the watcher needs, so the runtime stage installs offline and carries no build tools.
RUN python3 -m pip wheel --no-cache-dir --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="voicefox-watcher" \
      org.opencontainers.image.description="Notifications for VoiceFox outbound-calling campaigns"
COPY --from=build /wheels /tmp/wheels
ARG EXTRAS
RUN python3 -m venv /opt/voicefox-watcher \
    && /opt/voicefox-watcher/bin/pip install --no-cache-dir --no-index --find-links=/tmp/wheels \
        "voicefox-watcher${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /tmp/wheels \
    && mkdir -p /var/lib/voicefox-watcher /etc/voicefox-watcher \
    && chown 10001:10001 /var/lib/voicefox-watcher
ENV PATH=/opt/voicefox-watcher/bin:$PATH \
    WATCHER_CONFIG=/etc/voicefox-watcher/watcher.toml \
    STATE_DIRECTORY=/var/lib/voicefox-watcher \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# State (snapshots and the outbox) outlives the container; the config is a mounted file; secrets come from the
# environment (${VAR} in the config) or from files under /run/secrets (token_file = "/run/secrets/...").
VOLUME ["/var/lib/voicefox-watcher"]
USER 10001:10001
EXPOSE 9310
# Asks /healthz of the [http] listen address in the config: no curl needed. Set [http] listen = ":9310".
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["watcher", "health"]
# Python is PID 1 and handles SIGTERM itself: polling stops, deliveries in flight finish, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["watcher"]
CMD ["run"]
