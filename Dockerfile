# syntax=docker/dockerfile:1
# The services' image (ingest, api, monitor, simulate, migrations): `urbanpulse <command>`.
# Multi-stage: the wheels are built with the compilers of the build stage; the runtime stage
# has only the installed package, runs as an unprivileged user, and holds no secret (they come
# as files at run time, see deploy/docker/entrypoint.sh).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY services ./services
COPY simulators ./simulators
COPY dashboards ./dashboards
RUN pip wheel --wheel-dir /wheels '.[server]'

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels 'urbanpulse[server]' \
    && groupadd --system --gid 10001 urbanpulse \
    && useradd --system --uid 10001 --gid urbanpulse --home-dir /var/lib/urbanpulse \
       --create-home --shell /usr/sbin/nologin urbanpulse
COPY --chmod=0755 deploy/docker/entrypoint.sh /opt/urbanpulse/entrypoint.sh
COPY --chmod=0644 deploy/docker/healthcheck.py /opt/urbanpulse/healthcheck.py
USER urbanpulse:urbanpulse
WORKDIR /var/lib/urbanpulse
EXPOSE 8000
# The API's liveness; compose gives the other commands their own (or none).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/urbanpulse/healthcheck.py", "http://127.0.0.1:8000/healthz"]
ENTRYPOINT ["/opt/urbanpulse/entrypoint.sh"]
CMD ["--help"]
