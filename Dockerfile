# One image for every hpo service in docker-compose.yml: the sweep driver, the dashboard, the storage
# set-up, the Ray head and the GPU workers. Ray needs the same Python, Ray and torch on every node, so
# they all run this image.
#
#   docker build -t hpo:latest .            (docker compose build does the same)
#   docker run --rm hpo:latest hpo --version
#
# The base is PyTorch's own CUDA runtime image: torch and torchvision come with it and pip keeps them,
# as long as they satisfy pyproject.toml (torch>=2.4,<2.15). CUDA 12.6 runs on NVIDIA drivers >= 560
# (>= 525 through CUDA's minor-version compatibility); pick another tag of the same family for newer or
# older drivers with --build-arg BASE_IMAGE=... (docker compose: HPO_BASE_IMAGE in .env). Any base whose
# `python` is 3.10+ with pip, and with useradd, will do; docker/offline/torch-base.Dockerfile builds one
# where no image can be pulled (Debian, torch from the Python registry).
ARG BASE_IMAGE=pytorch/pytorch:2.14.1-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

# Ray's extras: "default" brings the Ray dashboard (port 8265) and "client" the Ray Client server the
# sweep connects to (ray://ray-head:10001); hpo itself needs neither on a single machine.
ARG RAY_VERSION=2.60.0
ARG HPO_UID=1000

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HPO_RAY_TMPDIR=/tmp/hpo-ray \
    RAY_USAGE_STATS_ENABLED=0

# Dependencies first, from pyproject.toml alone, with empty packages standing in for the source: this
# layer (a few minutes) is rebuilt only when the dependencies change, not on every code change.
WORKDIR /opt/hpo/src
COPY pyproject.toml ./
RUN mkdir -p hpo trials storage \
    && touch hpo/__init__.py trials/__init__.py storage/__init__.py \
    && python -m pip install . "ray[default,client]==${RAY_VERSION}" \
    && python -m pip uninstall -y hpo \
    && rm -rf /opt/hpo/src/*

# The project itself (.dockerignore keeps .venv, runs/, .git and .env out of the context); the source
# tree goes once it is installed, keeping the compose helpers (docker/) and the examples.
COPY . ./
RUN python -m pip install --no-deps . \
    && python -c "import torch, torchvision, ray, optuna, hpo, trials, storage; print('torch', torch.__version__, 'ray', ray.__version__)" \
    && hpo --version \
    && mkdir -p /opt/hpo/docker /work \
    && cp docker/*.py /opt/hpo/docker/ \
    && cp -r examples /work/examples \
    && cd / && rm -rf /opt/hpo/src

# A non-root user. Ubuntu 24.04 bases ship a user "ubuntu" with uid 1000: remove it so the uid is ours.
# /work is the working directory of every service: the sweep's config is mounted at /work/config.yaml
# and its checkpoints go to /work/runs (a named volume shared with the workers, which starts out owned
# by this user because the folder exists here); /home/hpo/.cache holds downloaded and pretrained weights
# (a named volume too, so the workers and the sweep see the same files).
RUN (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --shell /bin/bash --uid "${HPO_UID}" --user-group hpo \
    && mkdir -p /work/runs /home/hpo/.cache \
    && chown -R hpo:hpo /work /home/hpo

USER hpo
WORKDIR /work

# Each compose service gives its own command; this default only says what the image is.
CMD ["hpo", "--help"]
