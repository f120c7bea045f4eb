# patient-drip as an image: `drip serve` (web) and `drip worker` (dispatch) from one wheel.
#
# Stage 1 builds the wheel from this checkout (the same wheel `pip wheel .` makes: campaigns,
# templates, policy, migrations and web assets are package data). Stage 2 installs only that wheel
# into a virtualenv and runs as an unprivileged user; nothing of the source tree is copied in.
#
#   docker build -t patient-drip .
#   docker run --env-file prod.env -p 8000:8000 patient-drip                 # web
#   docker run --env-file prod.env patient-drip drip worker                  # a worker (one process per core)
#
# compose.yaml runs PostgreSQL, one web process and two workers (and the sandbox as a profile).

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY . .
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/drip \
 && /opt/drip/bin/pip install --no-cache-dir /wheels/patient_drip-*.whl

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/drip/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DRIP_HOST=0.0.0.0 \
    DRIP_LOG_FORMAT=json
# A fixed uid/gid so a mounted volume's ownership is predictable; no shell login, no home secrets.
RUN groupadd --system --gid 10001 drip \
 && useradd --system --uid 10001 --gid drip --home-dir /var/lib/drip --create-home --shell /usr/sbin/nologin drip
COPY --from=build /opt/drip /opt/drip
USER drip
WORKDIR /var/lib/drip
EXPOSE 8000
# The slim image has no curl: ask /healthz with the interpreter the image already has.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]
# One container on its own runs the scheduler in-process; compose.yaml runs it in separate workers.
CMD ["drip", "serve", "--port", "8000"]
