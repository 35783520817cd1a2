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

# Build stage: the venv is made here, so pip and the wheels stay out of the image.
FROM base AS build
ARG PIP_INSTALL_FLAGS=
# build/wheels holds the wheels and requirements.txt, the dependency list that
# scripts/wheelhouse.sh took from pyproject.toml: this layer changes only with them, never
# with our code or other pyproject settings.
COPY build/wheels/ /tmp/wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --quiet $PIP_INSTALL_FLAGS --find-links /tmp/wheels \
        -r /tmp/wheels/requirements.txt \
 && /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
 && echo /opt/app >"$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/mesh-app.pth"

FROM base
LABEL org.opencontainers.image.title="mesh" \
      org.opencontainers.image.description="mesh: the distributor and the node (python -m distributor | node)"
COPY --from=build /opt/venv /opt/venv
# Our code: pure Python packages run with `python -m`; the .pth above puts /opt/app on the
# venv's path, so no build backend and no wheel of our own are needed.
COPY shared/ /opt/app/shared/
COPY distributor/ /opt/app/distributor/
COPY node/ /opt/app/node/
# The command line (python -m meshctl members; docker compose exec distributor ...).
COPY meshctl/ /opt/app/meshctl/
# The example services (python -m examples.goods | examples.greeter).
COPY examples/ /opt/app/examples/
USER mesh
WORKDIR /tmp
ENTRYPOINT ["python", "-m"]
CMD ["node"]
