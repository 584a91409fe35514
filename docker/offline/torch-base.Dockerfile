# A stand-in for the public Python + torch base image (pytorch/pytorch:...), built where no image registry
# can be reached: docker/compose_test.sh builds it on a Debian image made by debootstrap and passes it to
# the project's Dockerfile as HPO_BASE_IMAGE. torch and torchvision come from the Python registry (CUDA
# builds; they run on CPU too). Not for production: use the public base there.
#
#   docker build -f docker/offline/torch-base.Dockerfile -t local/hpo-torch:2.14.1 CONTEXT
#
# CONTEXT holds host-ca.crt, the host's CA bundle (the registry may sit behind a proxy with its own CA);
# it is copied under another name because installing ca-certificates would rewrite /etc/ssl/certs.
ARG DEBIAN_IMAGE=local/debian:bookworm
FROM ${DEBIAN_IMAGE}

ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1

COPY host-ca.crt /usr/local/share/hpo-build-ca.crt
ENV PIP_CERT=/usr/local/share/hpo-build-ca.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# `python` and `pip` are the venv's, as in the public base, so the project's Dockerfile runs unchanged.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && python -m pip install "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
    && python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
