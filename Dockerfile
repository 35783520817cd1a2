# One image for both programs: `python -m distributor` and `python -m node` (the default).
#
# Builds with compose's BuildKit and with the classic builder (DOCKER_BUILDKIT=0): no
# `# syntax=` line, no RUN --mount. Offline on our machines, where `make setup` writes .env
# with BASE_IMAGE=mesh-base:bookworm (a local mmdebstrap import) and
# PIP_INSTALL_FLAGS=--no-index (install only from the host wheelhouse, build/wheels).
# With the defaults it builds anywhere that reaches the registries.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
# An imported base has no ENV at all, so PATH is set in full.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin mesh

# Build stage: the venv is made here, so pip, setuptools and the wheels stay out of the image.
FROM base AS build
ARG PIP_INSTALL_FLAGS=
COPY build/wheels/ /tmp/wheels/
COPY pyproject.toml scripts/requirements.py /tmp/req/
# Dependencies: this layer depends only on the wheelhouse and pyproject.toml, so it is
# cached across code changes. /opt/venv gets no pip; /opt/tools holds the pip and the
# build backend (setuptools, wheel) that install into it.
RUN set -eu; \
    python3 /tmp/req/requirements.py /tmp/req/pyproject.toml runtime >/tmp/req/runtime.txt; \
    python3 /tmp/req/requirements.py /tmp/req/pyproject.toml build >/tmp/req/build.txt; \
    python3 -m venv /opt/tools; \
    /opt/tools/bin/pip install --quiet $PIP_INSTALL_FLAGS --find-links /tmp/wheels \
        --upgrade -r /tmp/req/build.txt; \
    python3 -m venv --without-pip /opt/venv; \
    /opt/tools/bin/pip --python /opt/venv/bin/python install --quiet $PIP_INSTALL_FLAGS \
        --find-links /tmp/wheels -r /tmp/req/runtime.txt; \
    echo /opt/app >"$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/mesh-app.pth"
# Our code: installed with --no-deps into /opt/app, which the .pth above puts on the venv's path.
# README.m[d]: pyproject names it as the long description; the pattern lets it be absent.
COPY pyproject.toml README.m[d] /src/
COPY shared/ /src/shared/
COPY distributor/ /src/distributor/
COPY node/ /src/node/
RUN /opt/tools/bin/pip install --quiet --no-deps --no-build-isolation --no-index \
        --target /opt/app /src \
 && /opt/venv/bin/python -c 'import distributor, node, shared'

FROM base
LABEL org.opencontainers.image.title="mesh" \
      org.opencontainers.image.description="mesh: the distributor and the node (python -m distributor | node)"
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app
USER mesh
WORKDIR /tmp
ENTRYPOINT ["python", "-m"]
CMD ["node"]
