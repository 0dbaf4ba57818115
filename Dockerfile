# The YOLO ML backend for Label Studio, served by gunicorn on port 9090.
# CPU image by default. For an NVIDIA GPU build with `--build-arg TORCH_EXTRA_INDEX=` (empty): PyPI's
# Linux torch wheels are CUDA builds that bring their CUDA libraries along, so the host needs only the
# NVIDIA driver and the container toolkit (docker-compose.yml's `gpu` profile does this).
FROM python:3.11-slim
ARG TORCH_EXTRA_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PORT=9090 \
    MODEL_ROOT=/app/models \
    MEDIA_CACHE_DIR=/tmp/yolo-ls-media

# OpenCV needs these shared libraries even in its headless build.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
# CPU wheels of torch keep the image small; an empty TORCH_EXTRA_INDEX gives the CUDA wheels. (The space
# before "}" keeps the line valid when a tool strips the "--extra-index-url URL" pair, as docker-check does.)
RUN pip install ${TORCH_EXTRA_INDEX:+--extra-index-url $TORCH_EXTRA_INDEX } -r requirements.txt

COPY . .
RUN useradd --create-home --uid 1000 backend && chown -R backend /app
USER backend

EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=3s CMD ["python", "scripts/healthcheck.py"]
CMD ["./start.sh"]
