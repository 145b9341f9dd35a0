# The sparkdocs app. Pure-Python dependencies or wheels for both linux/amd64 and linux/arm64
# (the Spark's Grace CPU), so `docker buildx build --platform linux/arm64,linux/amd64 .` works.
# compose.yaml runs it read-only, without capabilities: at run time it writes only to /data (its
# volume) and /tmp (a tmpfs); tests/test_compose.py checks both.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    SPARKDOCS_CACHE_DIR=/data
WORKDIR /app

COPY pyproject.toml README.md ./
COPY sparkdocs ./sparkdocs
RUN pip install . && useradd --create-home --uid 10001 sparkdocs && mkdir -p /data \
    && chown sparkdocs /data
COPY app.py ./
COPY pages ./pages
COPY .streamlit ./.streamlit

USER sparkdocs
# Inside the container the app must listen on 0.0.0.0; who reaches it is decided by the published
# port (compose: 127.0.0.1 unless SPARKDOCS_BIND says otherwise). Without this, single-user mode
# refuses a non-loopback address. Set SPARKDOCS_AUTH=password or proxy before publishing on a LAN.
ENV SPARKDOCS_OPEN_APP=true
# The app judges the TCP peer itself (SPARKDOCS_TRUSTED_PROXIES): Streamlit's uvicorn must not
# replace it with an X-Forwarded-For value (config.child_environment does the same).
ENV FORWARDED_ALLOW_IPS=""
EXPOSE 8501
VOLUME ["/data"]
# No secrets here: the API key and endpoint come from the environment at run time.
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501"]
