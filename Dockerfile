# Synaptic Geometry Lab: one image for the API and the Celery worker.
#   docker build -t syngeo .                    # CPU-only torch (small image)
#   docker build --build-arg TORCH=cuda -t syngeo:cuda .   # torch with CUDA, for GPU workers
FROM python:3.11-slim

ARG TORCH=cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SYNGEO_DATA_DIR=/data

WORKDIR /app

# A C++ compiler: the curl simulator builds its CPU kernel on first use (and torch.compile
# needs one on CPUs too).
RUN apt-get update && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

# torch first, in its own layer: it is large and changes far less often than the code.
RUN if [ "$TORCH" = "cpu" ]; then \
        pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu; \
    else \
        pip install torch; \
    fi

COPY . .
RUN pip install . \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin syngeo \
    && mkdir -p /data && chown syngeo:syngeo /data

USER syngeo
# A container listens on all interfaces, so it runs in multi-user mode (create users with
# `syngeo users add NAME`); set SYNGEO_AUTH=0 only on a trusted network, with
# --allow-remote-without-auth.
ENV SYNGEO_AUTH=1
EXPOSE 8000
CMD ["syngeo", "serve", "--no-worker", "--host", "0.0.0.0"]
