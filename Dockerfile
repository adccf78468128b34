# AutoAnnotator backend image. CPU by default; for a CPU-only torch wheel pass
# --build-arg PIP_EXTRA_INDEX_URL=<the PyTorch CPU wheel index>.
FROM python:3.11-slim
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    DATA_DIR=/data HOST=0.0.0.0 PORT=9090
WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY . .
RUN pip install --no-deps -e .
EXPOSE 9090
VOLUME ["/data"]
CMD ["autoannotator", "serve"]
