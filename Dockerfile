# workload-tagger webhook image. Build: docker build -t ghcr.io/example/workload-tagger:0.1.0 .
# Runs as uid/gid 10001 with a read-only root filesystem (see manifests/base/deployment.yaml).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY webhook ./webhook
RUN pip install --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/tmp
COPY --from=build /install /usr/local
USER 10001:10001
EXPOSE 8443
ENTRYPOINT ["workload-tagger"]
CMD ["serve"]
