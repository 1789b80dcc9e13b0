# notsale's image. The wheel is built in one stage; the next installs it with the locked
# dependencies (requirements.lock, made by scripts/lock) into a slim Python without
# compilers, and runs `notsale serve` as an unprivileged user. The `load` stage adds locust
# for docker-compose.yml's crowd. tests/test_package.py runs these same pip commands.
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY notsale ./notsale
RUN python -m pip wheel --no-deps --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim AS serve
COPY --from=build /wheels /wheels
COPY requirements.lock /wheels/
RUN python -m pip install --no-cache-dir --constraint /wheels/requirements.lock /wheels/notsale-*.whl \
    && useradd --system --uid 10001 --no-create-home notsale
USER notsale
# Reachable from outside the container; JSON logs; Python's output unbuffered.
ENV NOTSALE_HOST=0.0.0.0 \
    NOTSALE_PORT=8080 \
    NOTSALE_LOG_FORMAT=json \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['NOTSALE_PORT'], timeout=2)"]
ENTRYPOINT ["notsale"]
CMD ["serve"]

FROM serve AS load
USER root
RUN python -m pip install --no-cache-dir --constraint /wheels/requirements.lock --find-links /wheels "notsale[bench]"
COPY bench/locustfile.py /locust/locustfile.py
USER notsale
WORKDIR /locust
ENTRYPOINT ["locust", "-f", "/locust/locustfile.py"]
CMD ["--mode", "sim"]
