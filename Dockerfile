# syntax=docker/dockerfile:1
# LotoOps's image: the locked requirements built into a virtual environment in a
# builder stage, static files collected at build time, and a final stage with the
# venv, the app and pg_dump only (no compilers, no pip cache), run as a non-root
# user. Both stages use the same base so the venv's interpreter link holds.
ARG PYTHON_IMAGE=python:3.12-slim-trixie

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY requirements.lock .
# Wheels first (any sdist is built here, never in the final image), then the
# venv installs from them alone, so it holds exactly the lock's versions.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --wheel-dir /build/wheels -r requirements.lock \
    && /opt/venv/bin/pip install --no-index --find-links /build/wheels -r requirements.lock

FROM builder AS static
WORKDIR /app
COPY . .
# A throwaway key and database: collectstatic needs settings, not secrets.
RUN SECRET_KEY=collectstatic-only LOTOOPS_VAR_DIR=/tmp/var STATIC_ROOT=/app/staticfiles \
    /opt/venv/bin/python manage.py collectstatic --noinput

FROM ${PYTHON_IMAGE} AS final
# pg_dump for sec.db_snapshot (diagnostics/probes/postgres.py): Debian's client
# dumps servers of its major version and older. Unpinned on purpose: a pinned
# Debian revision disappears from the archive with the next security update.
ARG PG_CLIENT_PACKAGE=postgresql-client
# fonts-noto-cjk: the PDF exports' font for Chinese, Japanese and Korean
# (incidents/reporting/pdfdoc.py; the build fails here if it is not where settings look).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends "${PG_CLIENT_PACKAGE}" fonts-noto-cjk \
    && rm -rf /var/lib/apt/lists/* \
    && test -f /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc \
    && groupadd --system --gid 10001 lotoops \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin lotoops
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOTOOPS_VAR_DIR=/app/var \
    STATIC_ROOT=/app/staticfiles \
    EVIDENCE_DIR=/app/evidence
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# The app and its static files belong to root: the user can read them, not change them.
COPY . .
COPY --from=static /app/staticfiles /app/staticfiles
# The only writable places: var/ (the embedded default's files; an emptyDir on
# Kubernetes) and the evidence folder (a volume in production).
RUN mkdir -p /app/var /app/evidence \
    && chown 10001:10001 /app/var /app/evidence \
    && chmod 0700 /app/var /app/evidence
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
# One uvicorn process per container (scale with replicas): `--workers N` would
# turn TCP_NODELAY off (uvicorn issue #3149). X-Forwarded-For is trusted from no
# address: behind a proxy, replace --no-proxy-headers with
# --forwarded-allow-ips=<the proxy's addresses> (never *; see the README).
CMD ["python", "-m", "uvicorn", "lotoops.asgi:application", "--host=0.0.0.0", "--port=8000", "--no-proxy-headers"]
