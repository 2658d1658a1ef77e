# layerscope container images: `--build-arg VARIANT=cpu` (default; about 0.7 GB) or
# `VARIANT=cuda` (libtorch's CUDA 13 libraries included; several GB). Built and smoke-tested
# here by scripts/container-smoke (buildah, base images made locally from Debian packages).
ARG VARIANT=cpu

FROM docker.io/library/rust:1.95-bookworm AS builder
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv binutils \
 && rm -rf /var/lib/apt/lists/*
# libtorch comes from the PyPI wheel, the same pin the service is tested with.
RUN python3 -m venv /opt/torch && /opt/torch/bin/pip install --no-cache-dir --disable-pip-version-check torch==2.11.0
# declared after the download, so that both variants share the cached layers above
ARG VARIANT
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs openapi.yaml ./
COPY contract contract
COPY src src
# the LMS adapters, which /v1/variants exports inside its folders
COPY examples examples
# every target Cargo.toml names must exist, benchmarks and examples included
COPY bench/*.rs bench/
ENV LIBTORCH=/opt/torch/lib/python3.11/site-packages/torch \
    LAYERSCOPE_RPATH=\$ORIGIN/../torch/lib
RUN if [ "$VARIANT" = cpu ]; then export LAYERSCOPE_CPU_ONLY=1; fi \
 && cargo build --release --locked --bin layerscope
# Stage the binary and exactly the libraries it loads, in the wheel's own layout so that
# libtorch's RUNPATHs ($ORIGIN/../../nvidia/...) still resolve.
RUN set -eu; site=/opt/torch/lib/python3.11/site-packages; \
    mkdir -p /out/bin /out/torch/lib /out/nvidia/cu13/lib; \
    strip --strip-debug -o /out/bin/layerscope target/release/layerscope; \
    if [ "$VARIANT" = cpu ]; then \
      cp -a $site/torch/lib/libtorch_cpu.so $site/torch/lib/libc10.so $site/torch/lib/libgomp.so* /out/torch/lib/; \
      cp -a $site/nvidia/cu13/lib/libcudart.so* $site/nvidia/cu13/lib/libcupti.so* /out/nvidia/cu13/lib/; \
    else \
      cp -a $site/torch/lib/*.so* /out/torch/lib/ && rm -f /out/torch/lib/libtorch_python.so; \
      cp -a $site/nvidia/. /out/nvidia/; \
    fi

FROM docker.io/library/debian:bookworm-slim
RUN groupadd -g 10001 layerscope && useradd -u 10001 -g 10001 -M -d /nonexistent -s /usr/sbin/nologin layerscope
COPY --from=builder /out /opt/layerscope
ENV LAYERSCOPE_ADDR=0.0.0.0:8080 \
    GOMP_SPINCOUNT=10000
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/layerscope/bin/layerscope", "healthcheck"]
ENTRYPOINT ["/opt/layerscope/bin/layerscope"]
