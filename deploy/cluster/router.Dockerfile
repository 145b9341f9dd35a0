# vLLM's router (PyPI `vllm-router`: a Rust load balancer shipped as a binary in the wheel; no
# compiler needed). Built once on the head Spark by compose.router.yaml.
FROM python:3.12-slim
ARG VLLM_ROUTER_VERSION=0.1.17
RUN pip install --no-cache-dir "vllm-router==${VLLM_ROUTER_VERSION}" \
    && useradd --system --no-create-home router
USER router
ENTRYPOINT ["vllm-router"]
