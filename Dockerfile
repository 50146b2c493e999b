# The worker and the shim in one slim image: `covers worker` (default) or `covers shim`.
# libvips comes inside the pyvips-binary wheel, so no system image libraries are installed.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
RUN python -m venv /opt/covers
COPY requirements.lock pyproject.toml README.md ./
COPY schemas ./schemas
COPY processors ./processors
COPY streams ./streams
# Runtime dependencies only, at the versions of the lock (which also pins the dev tools).
RUN /opt/covers/bin/pip install --no-cache-dir --disable-pip-version-check \
        --constraint requirements.lock . \
    && /opt/covers/bin/covers --help > /dev/null

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --gid 0 --home-dir /tmp --shell /usr/sbin/nologin covers
COPY --from=build /opt/covers /opt/covers
COPY config/presets.example.toml /etc/covers/presets.example.toml
ENV PATH=/opt/covers/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/cache \
    WORKER_DATA_DIR=/tmp/covers/faust \
    WORKER_WEB_HOST=0.0.0.0 \
    SHIM_HOST=0.0.0.0 \
    METRICS_HOST=0.0.0.0 \
    LOG_FORMAT=json
WORKDIR /tmp
USER 10001
# 6066: worker probes and catalog view; 8000: shim; 9091: worker /metrics.
EXPOSE 6066 8000 9091
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["covers", "healthcheck"]
ENTRYPOINT ["covers"]
CMD ["worker"]
